"""The `opa-wasm` engine: the policies compiled by OPA itself to WebAssembly (`opa build -t wasm`)
and evaluated in process with wasmtime, through OPA's Wasm ABI (https://www.openpolicyagent.org/docs/wasm).

OPA's own compiler plans the policies, and OPA's own C library implements the built-ins inside the
module, so the answers are OPA's. What the module cannot do alone it imports from its host
(`builtins()`: time.now_ns, io.jwt.decode, semver.*, graphql.*, http.send, ...); this host
provides `time.now_ns` and the forms of `sprintf` whose output is certain, and a policy that needs
any other is refused at load, naming it. Loading shares everything else with the embedded engine (the
policy directory, bundles, reloads, the input projection and the decision cache; embedded.py).

Per decision: the input's JSON text is written into the module's memory at a fixed base and
`opa_eval` runs the entry point with the heap starting after it, so nothing accumulates between
decisions. An `opa_abort` (a conflict, for instance) fails the evaluation, which denies.
"""

from __future__ import annotations

import ctypes
import io
import tarfile
import tempfile
import time
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson
import wasmtime

from . import opa_tool
from .bounded import BoundExceeded, ChildFailed
from .embedded import CompiledByOpaEngine, _opa_verdict
from .engine import PolicyEvaluationError, UndefinedDecision
from .input_reads import PolicyReads, reads_of
from .source import PolicyLoadError, PolicyProblem, PolicySource

_ENGINE = wasmtime.Engine()
_I32 = wasmtime.ValType.i32()


class _Aborted(Exception):
    pass


_VERB = re.compile(r"(%.)", re.S)


def _sprintf(format_: Any, values: Any) -> str:
    """OPA's sprintf for the forms whose output is certain: %s and %v of strings, %d and %v of
    integers, %v of booleans, and %%. Anything else fails the evaluation (the proxy denies) rather
    than risk a different string from Go's formatting."""
    if not isinstance(format_, str) or not isinstance(values, list):
        raise _Aborted("sprintf: operands must be a string and an array")
    pieces = _VERB.split(format_)  # literal, verb, literal, verb, ..., literal
    if any("%" in literal for literal in pieces[::2]) or len(pieces[1::2]) - pieces.count("%%") != len(values):
        raise _Aborted("sprintf: arguments and verbs do not match; use engine 'opa'")
    remaining = iter(values)
    return "".join(piece if i % 2 == 0 else _format(piece[1], remaining) for i, piece in enumerate(pieces))


def _format(verb: str, remaining: Any) -> str:
    if verb == "%":
        return "%"
    value = next(remaining)
    if verb in "sv" and isinstance(value, str):
        return value
    if verb in "dv" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if verb == "v" and isinstance(value, bool):
        return "true" if value else "false"
    raise _Aborted(f"sprintf: %{verb} of {type(value).__name__} is not formatted by this host; use engine 'opa'")


# Built-ins OPA's Wasm module leaves to its host, and which this host provides: name -> function of
# the decision's clock (one value per evaluation, as OPA's `time.now_ns` is) and the arguments.
HOST_BUILTINS: dict[str, Callable[..., Any]] = {
    "sprintf": lambda now, format_, values: _sprintf(format_, values),
    "time.now_ns": lambda now: now,
}


@dataclass
class _Module:
    source: PolicySource
    store: wasmtime.Store
    memory: wasmtime.Memory
    eval: Any  # opa_eval
    data: int  # address of the parsed data document
    base: int  # heap address where each decision's input goes
    entrypoints: dict[str, int]
    reads: PolicyReads | None = None
    host_ids: dict[int, str] = field(default_factory=dict)  # the module's number for each host built-in
    now_ns: int = 0  # time.now_ns() of the evaluation under way

    def _c_string(self, address: int) -> bytes:
        return ctypes.string_at(ctypes.addressof(self.memory.data_ptr(self.store).contents) + address)

    def _write(self, address: int, data: bytes) -> None:
        needed = address + len(data) + (1 << 16) - self.memory.data_len(self.store)
        if needed > 0:
            self.memory.grow(self.store, -(-needed // 65536))
        ctypes.memmove(ctypes.addressof(self.memory.data_ptr(self.store).contents) + address, data, len(data))

    def evaluate(self, entrypoint: str, document: bytes) -> Any:
        if entrypoint not in self.entrypoints:
            raise UndefinedDecision(entrypoint)
        self._write(self.base, document)
        self.now_ns = time.time_ns()
        try:
            result = self.eval(self.store, 0, self.entrypoints[entrypoint], self.data, self.base, len(document),
                               self.base + len(document), 0)
        except _Aborted as exc:
            raise PolicyEvaluationError(str(exc)) from None
        except wasmtime.Trap as exc:
            raise PolicyEvaluationError(_abort_message(exc)) from None
        except wasmtime.WasmtimeError as exc:
            raise PolicyEvaluationError(f"opa-wasm: {str(exc).splitlines()[0]}") from None
        rows = orjson.loads(self._c_string(result))
        if not rows:
            raise UndefinedDecision(entrypoint)
        if len(rows) > 1:
            raise PolicyEvaluationError("more than one result")
        return rows[0]["result"]


def _abort_message(exc: Exception) -> str:
    cause = exc.__cause__ if isinstance(exc.__cause__, _Aborted) else None
    return str(cause) if cause else f"opa-wasm trap: {str(exc).splitlines()[0]}"


def _build(source: PolicySource, entrypoints: list[str], opa: str) -> bytes:
    """`opa build -t wasm` of the modules: the module's bytes (data goes in at instantiation)."""
    with tempfile.TemporaryDirectory(prefix="iam-proxy-wasm-") as tmp:
        for i, text in enumerate(source.modules.values()):
            (Path(tmp) / f"m{i}.rego").write_text(text)
        out = Path(tmp) / "bundle.tar.gz"
        argv = ["build", "-t", "wasm", *(a for e in entrypoints for a in ("-e", e)), "-o", str(out), tmp]
        try:
            opa_tool.run(opa, *argv)
        except (BoundExceeded, ChildFailed) as exc:
            raise PolicyLoadError([PolicyProblem(next(iter(source.modules)), 0,
                                                 f"opa build -t wasm failed: {str(exc)[:500]}")]) from None
        with tarfile.open(fileobj=io.BytesIO(out.read_bytes())) as bundle:
            member = next(m for m in bundle.getmembers() if m.name.lstrip("/") == "policy.wasm")
            extracted = bundle.extractfile(member)
            assert extracted is not None
            return extracted.read()


def _instantiate(source: PolicySource, wasm: bytes) -> _Module:
    store = wasmtime.Store(_ENGINE)
    memory = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(2, None)))
    linker = wasmtime.Linker(_ENGINE)
    linker.define(store, "env", "memory", memory)
    module: list[_Module] = []

    def abort(address: int) -> None:
        raise _Aborted(module[0]._c_string(address).decode(errors="replace") if module else "opa_abort")

    def host_builtin(builtin_id: int, _context: int, *arguments: int) -> int:
        instance = module[0]
        values = [orjson.loads(instance._c_string(exports["opa_json_dump"](store, a))) for a in arguments]
        result = orjson.dumps(HOST_BUILTINS[instance.host_ids[builtin_id]](instance.now_ns, *values))
        address = exports["opa_malloc"](store, len(result))
        instance._write(address, result)
        return int(exports["opa_json_parse"](store, address, len(result)))

    linker.define_func("env", "opa_abort", wasmtime.FuncType([_I32], []), abort)
    linker.define_func("env", "opa_println", wasmtime.FuncType([_I32], []), lambda address: None)
    for arity in range(5):
        linker.define_func("env", f"opa_builtin{arity}", wasmtime.FuncType([_I32] * (arity + 2), [_I32]), host_builtin)
    exports = linker.instantiate(store, wasmtime.Module(_ENGINE, wasm)).exports(store)
    data_text = orjson.dumps(source.data)
    address = exports["opa_malloc"](store, len(data_text))
    instance = _Module(source, store, memory, exports["opa_eval"], 0, 0, {})
    module.append(instance)
    instance._write(address, data_text)
    instance.data = exports["opa_json_parse"](store, address, len(data_text))
    instance.base = exports["opa_heap_ptr_get"](store)

    def dump(address: int) -> Any:
        return orjson.loads(instance._c_string(exports["opa_json_dump"](store, address)))

    needs = dump(exports["builtins"](store))
    missing = sorted(set(needs) - set(HOST_BUILTINS))
    if missing:
        raise PolicyLoadError([PolicyProblem(next(iter(source.modules)), 0, (
            f"built-ins {', '.join(missing)} are not inside OPA's Wasm module (a host must provide them, and "
            "this one does not); use engine 'opa'"))])
    instance.host_ids = {number: name for name, number in needs.items()}
    instance.entrypoints = dump(exports["entrypoints"](store))
    return instance


def compile_wasm(source: PolicySource, entrypoints: list[str]) -> _Module:
    trees, why = _opa_verdict(source)
    opa = opa_tool.find()
    if trees is None or opa is None:
        raise PolicyLoadError([PolicyProblem(next(iter(source.modules)), 0,
                                             f"engine opa-wasm needs the opa binary to compile policies ({why})")])
    module = _instantiate(source, _build(source, entrypoints, opa))
    module.reads = reads_of(trees)
    return module


class OpaWasmEngine(CompiledByOpaEngine):
    name = "opa-wasm"
    compile = staticmethod(compile_wasm)  # type: ignore[assignment]
