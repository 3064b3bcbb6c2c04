"""The embedded Rego engine: rego-cpp through `regopy`, compiled once per policy revision.

Guards (see docs/policies.md; each is a security requirement):
- the policies are first checked by OPA's own compiler (`opa check`, opa_tool.py): what OPA refuses
  is refused; OPA's syntax tree then gives what they read (input_reads.py) and the call results
  nobody uses (embedded_ast.py);
- the compile and one evaluation per entry point run first in a forked child bounded in time and
  memory (bounded.py): a rule that loops or grows without end is refused, naming it;
- a policy that calls a built-in the engine does not implement, or implements wrongly, is refused at
  load time with file and line: such calls evaluate to undefined, so a `deny if net.cidr_contains(..)`
  would silently never fire;
- each entry point is evaluated once at load time, so a reference to an unknown function or variable
  is refused instead of silently denying (or worse, silently not denying) at run time;
- constructs where rego-cpp answers differently from OPA (unsafe variables, v0 bodies, `in` used as
  a value, unsupported regex syntax, ...) are refused at load by embedded_lint.py; the differential
  suite (tests/differential) evaluates every case in both engines;
- the input is handed over as JSON text and the decision read from the result tree, never from its
  JSON text (embedded_output.py): a quote in the request cannot rewrite the decision;
- decisions are read through a prebuilt bundle entry point (a plain query reports `false` as undefined
  and recompiles per call);
- a reload builds a new Interpreter and bundle and swaps them in only when the build succeeded;
- an Interpreter is never shared between threads: the engine is only called from the event loop.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import orjson

from ..core.loop_batch import TurnBatch
from . import opa_tool
from .bounded import BoundExceeded, ChildFailed, run_bounded
from .embedded_ast import unused_call_results
from .embedded_lint import lint
from .engine import EngineResult, PolicyEvaluationError, UndefinedDecision
from .input_reads import WHOLE, PolicyReads, project, reads_of
from .source import (PolicyLoadError, PolicyProblem, PolicySource, dotted_calls, load_source, scan,
                     with_replacements)

if TYPE_CHECKING:
    from regopy import Interpreter

log = logging.getLogger("iam_proxy.policy")


@functools.cache
def _regocpp() -> tuple[ModuleType, ModuleType, ModuleType]:
    """rego-cpp's bindings and the reader of its results, imported by the first rego-cpp compile: a
    process whose policies OPA's library runs (the default) never loads them (13 MB in each process)."""
    import regopy
    from regopy import rego_shared

    from . import embedded_output
    return regopy, rego_shared, embedded_output


# Namespaces of OPA built-ins. A dotted call in one of these that the engine does not know is an
# unsupported built-in (a user function is called through `data.` or an import alias instead).
BUILTIN_NAMESPACES = frozenset({
    "array", "base64", "base64url", "bits", "crypto", "glob", "graph", "graphql", "hex", "http", "io",
    "json", "net", "numbers", "object", "opa", "providers", "rand", "regex", "rego", "semver", "strings",
    "time", "trace", "units", "urlquery", "uuid", "yaml",
})

# Built-ins the engine has, but whose results differ from OPA's (verified against OPA, see
# docs/policies.md): refused like the missing ones, since a wrong answer is worse than none.
WRONG_BUILTINS = {
    "object.union": "not recursive (OPA merges nested objects)",
    "object.union_n": "not recursive (OPA merges nested objects)",
    "time.parse_rfc3339_ns": "fails on timestamps ending in 'Z'",
    "time.parse_ns": "fails on timestamps ending in 'Z'",
    "time.format": "writes nanoseconds OPA leaves out",
    "sort": "returns a set for a set (OPA: an array), so indexing the result is undefined",
    "urlquery.encode": "encodes a space as %20 (OPA: +)",
    "urlquery.encode_object": "encodes a space as %20 (OPA: +)",
    "urlquery.decode": "leaves + undecoded (OPA: a space)",
    "urlquery.decode_object": "leaves + undecoded (OPA: a space)",
    # found by OPA's conformance cases (tests/conformance, docs/policy-engines.md)
    "strings.replace_n": "re-applies replacements to their output, and an empty key loops without end",
    "semver.is_valid": "accepts leading zeros and empty pre-release or build sections",
    "semver.compare": "accepts leading zeros and orders by build metadata, which OPA ignores",
    "crypto.x509.parse_certificates": "returns an empty list for invalid data where OPA fails",
    "opa.runtime": "hands policies the proxy's whole environment (its secrets), and `with` cannot replace it",
}

_ERROR_AT = re.compile(r"\(error (\d+):")
_OFFSET = re.compile(r"\|(\d+)\|\d+")
_ERROR_MSG = re.compile(r"\(errormsg \d+:([^\n]*?)\)?\n")


def rego_error_to_policy_errors(text: str, source: PolicySource) -> list[PolicyProblem]:
    """rego-cpp reports `(error 15:policies/x.rego|26|2 (errormsg 24:...))`: the file name prefixed by
    its length, then the byte offset and length of the offending text."""
    errors: list[PolicyProblem] = []
    messages = _ERROR_MSG.findall(text)
    for i, match in enumerate(_ERROR_AT.finditer(text)):
        length = int(match.group(1))
        file = text[match.end():match.end() + length]
        position = _OFFSET.match(text, match.end() + length)
        offset = int(position.group(1)) if position else 0
        message = messages[i].strip() if i < len(messages) else "compile error"
        errors.append(PolicyProblem(file, source.line_of(file, offset), message))
    if not errors:
        first = messages[0].strip() if messages else text.strip().splitlines()[0] if text.strip() else "error"
        errors.append(PolicyProblem(next(iter(source.modules), "?"), 0, first))
    return errors


def _module_alias_names(text: str) -> set[str]:
    return set(re.findall(r"^\s*import\s+\S+\s+as\s+([A-Za-z_]\w*)", text, re.M)) | {
        m.split(".")[-1] for m in re.findall(r"^\s*import\s+(data\.[\w.]+)\s*$", text, re.M)
    }


def check_builtins(interpreter: Interpreter, source: PolicySource) -> list[PolicyProblem]:
    errors: list[PolicyProblem] = []
    for file, text in source.modules.items():
        aliases = _module_alias_names(text)
        for name, line in dotted_calls(text) + with_replacements(text):
            head = name.split(".", 1)[0]
            if head in ("data", "input") or head in aliases:
                continue
            if name in WRONG_BUILTINS:
                errors.append(PolicyProblem(file, line, f"built-in {name} is not reliable in the embedded engine "
                                          f"({WRONG_BUILTINS[name]}); use engine 'opa'"))
            elif head in BUILTIN_NAMESPACES and not interpreter.is_builtin(name):
                errors.append(PolicyProblem(file, line, f"built-in {name} is not supported by the embedded "
                                          "engine (it would evaluate to undefined); use engine 'opa'"))
    return errors


def _evaluate(interpreter: Interpreter, bundle: Any, entrypoint: str) -> Any:
    """One entry point's value; raises UndefinedDecision or PolicyEvaluationError."""
    _, shared, output = _regocpp()
    impl = shared.rego_bundle_query_entrypoint(interpreter._impl, bundle._impl, entrypoint)
    try:
        ok = shared.rego_output_ok(impl)
        text = shared.rego_output_string(impl)
        if ok and not text.startswith("(") and text != "undefined":
            # from the result tree, not the text: the text can carry unescaped quotes (embedded_output.py)
            return output.read_value(impl, entrypoint)
    finally:
        shared.rego_free_output(impl)
    if not ok or text.startswith("("):
        messages = _ERROR_MSG.findall(text)
        raise PolicyEvaluationError(messages[0].strip() if messages else "evaluation failed")
    raise UndefinedDecision(entrypoint)


@dataclass
class _Compiled:
    interpreter: Interpreter
    bundle: Any
    source: PolicySource
    reads: PolicyReads | None = None  # what the policies read (input_reads.py); set once compiled


# Bounds of the load-time check (compile + one evaluation per entry point) in its child process.
LOAD_TIMEOUT_SECONDS = 10.0
LOAD_MEMORY_BYTES = 1 << 30


def compile_policies(source: PolicySource, entrypoints: list[str]) -> _Compiled:
    """Checked by OPA's compiler first (what OPA refuses is refused), then in a bounded child
    (bounded.py): a policy that makes the engine loop or exhaust memory is refused, naming the entry
    point; then compiled here, without the evaluation."""
    trees, why = _opa_verdict(source)
    opa_checked = trees is not None
    if not opa_checked:
        log.warning("policies not checked by opa (%s): the embedded engine's stricter token checks apply, and "
                    "it is handed the whole input", why)
    try:
        problems = run_bounded(lambda progress: _problems(source, entrypoints, progress, opa_checked),
                               LOAD_TIMEOUT_SECONDS, LOAD_MEMORY_BYTES)
    except BoundExceeded as exc:
        raise PolicyLoadError([_bound_problem(source, exc)]) from None
    except ChildFailed as exc:
        raise PolicyLoadError([PolicyProblem(next(iter(source.modules)), 0,
                                             f"the embedded engine crashed loading this policy ({exc}); "
                                             "use engine 'opa'")]) from None
    if problems:
        raise PolicyLoadError(problems)
    compiled = _compile(source, entrypoints, smoke=False, opa_checked=opa_checked)
    compiled.reads = reads_of(trees) if trees is not None else PolicyReads(WHOLE, (), why)
    return compiled


def _opa_verdict(source: PolicySource) -> tuple[dict[str, Any] | None, str]:
    """OPA's syntax trees of the modules once its compiler accepted them; (None, why) without opa.
    Raises PolicyLoadError for what OPA refuses, and for what the trees show rego-cpp gets wrong."""
    try:
        problems = opa_tool.check(source.modules)
        trees = opa_tool.parse(source.modules) if not problems else {}
    except opa_tool.OpaUnavailable as exc:
        return None, str(exc)
    problems = problems or unused_call_results(trees)
    if problems:
        raise PolicyLoadError(problems)
    return trees, ""


def _problems(source: PolicySource, entrypoints: list[str], progress: Callable[[str], None],
              opa_checked: bool) -> list[PolicyProblem]:
    try:
        _compile(source, entrypoints, progress=progress, opa_checked=opa_checked)
    except PolicyLoadError as exc:
        return exc.errors
    return []


def _bound_problem(source: PolicySource, exc: BoundExceeded) -> PolicyProblem:
    bound = f"{LOAD_TIMEOUT_SECONDS:g} s" if exc.what == "time" else f"{LOAD_MEMORY_BYTES >> 20} MiB of memory"
    entrypoint = exc.doing.removeprefix("evaluating entry point ")
    if entrypoint != exc.doing:
        return PolicyProblem(_file_of(source, entrypoint), 0,
                             f"rule {entrypoint.replace('/', '.')}: evaluating it once at load did not finish "
                             f"within {bound} in the embedded engine (it loops or grows without end); "
                             "the policy is refused")
    return PolicyProblem(next(iter(source.modules)), 0, f"compiling the policy did not finish within {bound} "
                                                         "in the embedded engine; the policy is refused")


def _compile(source: PolicySource, entrypoints: list[str], progress: Callable[[str], None] = lambda _: None,
             smoke: bool = True, opa_checked: bool = False) -> _Compiled:
    progress("compiling")
    regopy = _regocpp()[0]
    interpreter = regopy.Interpreter()
    interpreter.log_level = regopy.LogLevel.NONE
    errors: list[PolicyProblem] = []
    for file, text in source.modules.items():
        try:
            interpreter.add_module(file, text)
        except regopy.RegoError as exc:
            errors.extend(rego_error_to_policy_errors(str(exc), source))
    if errors:
        raise PolicyLoadError(errors)
    errors = check_builtins(interpreter, source) + lint(source, interpreter.is_builtin, WRONG_BUILTINS, opa_checked).errors
    if errors:
        raise PolicyLoadError(errors)
    if source.data:
        interpreter.add_data_json(orjson.dumps(source.data).decode())
    try:
        bundle = interpreter.build(None, list(entrypoints))
    except regopy.RegoError as exc:
        raise PolicyLoadError(rego_error_to_policy_errors(str(exc), source)) from None
    if not bundle.ok():
        raise PolicyLoadError([PolicyProblem(next(iter(source.modules)), 0, "the policy bundle did not build")])
    # A smoke evaluation per entry point surfaces unknown functions and unsafe variables now.
    interpreter.set_input(regopy.Input({}))
    for entrypoint in entrypoints if smoke else []:
        progress(f"evaluating entry point {entrypoint}")
        try:
            _evaluate(interpreter, bundle, entrypoint)
        except UndefinedDecision:
            pass
        except PolicyEvaluationError as exc:
            raise PolicyLoadError([PolicyProblem(_file_of(source, entrypoint), 0,
                                               f"entry point {entrypoint} fails to evaluate: {exc}")]) from None
    return _Compiled(interpreter, bundle, source)


def _file_of(source: PolicySource, entrypoint: str) -> str:
    package = ".".join(entrypoint.split("/")[:-1])
    for file, text in source.modules.items():
        if re.search(rf"^\s*package\s+{re.escape(package)}\s*$", text, re.M):
            return file
    return next(iter(source.modules))


class EmbeddedEngine:
    name = "embedded"
    # how a policy source becomes something `decide` evaluates (opa_wasm.py brings its own)
    compile = staticmethod(compile_policies)

    def __init__(self, policy_dir: Path | None, entrypoints: list[str], metrics: Any = None,
                 source: PolicySource | None = None) -> None:
        """From a policy directory (reloaded when it changes), or from a `source` the caller swaps
        in with `activate` (bundles)."""
        self.policy_dir = policy_dir
        self.entrypoints = sorted(set(entrypoints))
        self._metrics = metrics
        if source is None:
            if policy_dir is None:
                raise ValueError("EmbeddedEngine needs a policy_dir or a source")
            source = load_source(policy_dir)
        self._compiled = self.compile(source, self.entrypoints)
        log.info("policies compiled: revision %s, %d modules", self.revision, len(self._compiled.source.modules))

    @property
    def revision(self) -> str:
        return self._compiled.source.revision

    @property
    def modules(self) -> dict[str, str]:
        return self._compiled.source.modules

    @property
    def fingerprint(self) -> str:
        """The content this engine runs, alike in every worker (the decision cache's key names it)."""
        return self._compiled.source.fingerprint

    @property
    def policy_reads(self) -> PolicyReads:
        assert self._compiled.reads is not None  # set by compile_policies
        return self._compiled.reads

    def activate(self, source: PolicySource) -> None:
        """Compile `source` and swap it in; raises PolicyLoadError and keeps the current one if it fails."""
        self._compiled = self.compile(source, self.entrypoints)
        log.info("policies activated: revision %s", self.revision)

    @property
    def ready(self) -> bool:
        return True

    def reload_if_changed(self) -> bool:
        """Recompile when files changed; a broken edit keeps the last good policy. True if swapped."""
        if self.policy_dir is None or scan(self.policy_dir) == self._compiled.source.stamp:
            return False
        try:
            compiled = self.compile(load_source(self.policy_dir), self.entrypoints)
        except (PolicyLoadError, OSError) as exc:
            log.error("policy reload failed, keeping revision %s: %s", self.revision, exc)
            if self._metrics is not None:
                self._metrics.policy_reloads.labels(result="error").inc()
            # Remember the broken stamp so the same broken files are not recompiled every tick.
            self._compiled.source = PolicySource(self._compiled.source.modules, self._compiled.source.data,
                                                 self._compiled.source.revision, scan(self.policy_dir))
            return False
        self._compiled = compiled
        log.info("policies reloaded: revision %s", self.revision)
        if self._metrics is not None:
            self._metrics.policy_reloads.labels(result="ok").inc()
        return True

    async def decide(self, path: str, policy_input: dict[str, Any]) -> EngineResult:
        compiled = self._compiled
        # As JSON text, never Input(dict): rego-cpp keeps literals and data in JSON-escaped form and
        # writes strings out unescaped, so a raw input string with a quote compares wrong and can break
        # out of a reason string into the decision (`"allowed": true`); tests/differential/cases/strings.yaml
        # Only the parts the policies read: parsing the input is most of a decision's cost.
        compiled.interpreter.set_input_term(orjson.dumps(project(policy_input, compiled.reads.input if compiled.reads else None)).decode())
        value = _evaluate(compiled.interpreter, compiled.bundle, path)
        return EngineResult(value=value, revision=compiled.source.revision, engine=self.name)

    async def close(self) -> None:
        return None


class CompiledByOpaEngine(EmbeddedEngine):
    """An in-process engine whose policies OPA compiled (opa_lib.py, opa_wasm.py): loading as above,
    and a compiled form with `evaluate(entrypoint, input JSON)` that raises UndefinedDecision or
    PolicyEvaluationError itself."""

    # OPA's evaluator reads much of the compiled policy on every decision, and after the rest of a
    # request has run those reads miss the CPU's caches (docs/performance.md, round seven): the
    # decisions of one loop turn are evaluated together (core/loop_batch.py).

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn: TurnBatch[tuple[Any, str, bytes], Any] = TurnBatch(_evaluate_compiled)

    async def decide(self, path: str, policy_input: dict[str, Any]) -> EngineResult:
        compiled: Any = self._compiled
        document = orjson.dumps(project(policy_input, compiled.reads.input if compiled.reads else WHOLE))
        value = await self._turn.run((compiled, path, document))
        return EngineResult(value=value, revision=compiled.source.revision, engine=self.name)


def _evaluate_compiled(asked: tuple[Any, str, bytes]) -> Any:
    compiled, path, document = asked
    return compiled.evaluate(path, document)
