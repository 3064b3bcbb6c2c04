"""`iam-proxy policy test DIR`: run `test_*` rules from `*_test.rego` files, like `opa test`.

Engines: `opa` runs the real `opa test` (the reference, and the default when an OPA binary is found);
`embedded` runs the tests in rego-cpp. rego-cpp crashes (SIGSEGV) on some `with` constructs, e.g.
`with input as ...` over a rule that indexes a collection by a local variable, so embedded tests run
in child processes: a crash marks the tests it hit as ERROR instead of killing the run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
from regopy import Input, Interpreter, LogLevel, RegoError

from .embedded import _evaluate, rego_error_to_policy_errors
from .engine import PolicyEvaluationError, UndefinedDecision
from .opa_tool import find as find_opa
from .source import PolicyLoadError, load_source

_PACKAGE = re.compile(r"^\s*package\s+([\w.]+)", re.M)
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.M)


def discover(source_modules: dict[str, str]) -> list[tuple[str, str, str]]:
    """(file, package, rule) for every test rule."""
    found = []
    for file, text in source_modules.items():
        if not file.endswith("_test.rego"):
            continue
        package = _PACKAGE.search(text)
        if not package:
            continue
        for rule in dict.fromkeys(_TEST_RULE.findall(text)):
            found.append((file, package.group(1), rule))
    return found


def run_opa(directory: Path, opa: str) -> tuple[list[dict], str | None]:
    proc = subprocess.run([opa, "test", "--format", "json", str(directory)], capture_output=True, text=True,
                          timeout=300)
    try:
        raw = orjson.loads(proc.stdout)
    except orjson.JSONDecodeError:
        return [], (proc.stderr or proc.stdout).strip() or f"opa test exited {proc.returncode}"
    results = []
    for item in raw:
        if item.get("error"):
            status, detail = "ERROR", str(item["error"].get("message", item["error"]))
        elif item.get("fail"):
            status, detail = "FAIL", ""
        else:
            status, detail = "PASS", ""
        results.append({"file": item["location"]["file"], "name": f"{item['package']}.{item['name']}",
                        "status": status, "detail": detail})
    return results, None


def run_embedded_inprocess(directory: Path, only: str | None = None) -> list[dict]:
    source = load_source(directory, include_tests=True)
    tests = discover(source.modules)
    if only is not None:
        tests = [t for t in tests if f"data.{t[1]}.{t[2]}" == only]
    interpreter = Interpreter()
    interpreter.log_level = LogLevel.NONE
    for file, text in source.modules.items():
        try:
            interpreter.add_module(file, text)
        except RegoError as exc:
            raise PolicyLoadError(rego_error_to_policy_errors(str(exc), source)) from None
    if source.data:
        interpreter.add_data_json(orjson.dumps(source.data).decode())
    entrypoints = [f"{pkg.replace('.', '/')}/{rule}" for _, pkg, rule in tests]
    results = []
    if not entrypoints:
        return results
    bundle = interpreter.build(None, entrypoints)
    interpreter.set_input(Input({}))
    for (file, pkg, rule), entrypoint in zip(tests, entrypoints):
        try:
            value = _evaluate(interpreter, bundle, entrypoint)
            status = "PASS" if value is True else "FAIL"
            detail = "" if value is True else f"got {orjson.dumps(value).decode()}"
        except UndefinedDecision:
            status, detail = "FAIL", "undefined"
        except PolicyEvaluationError as exc:
            status, detail = "ERROR", str(exc)
        results.append({"file": file, "name": f"data.{pkg}.{rule}", "status": status, "detail": detail})
    return results


class _Crashed(Exception):
    pass


def _child_run(directory: Path, only: str | None) -> tuple[list[dict], str | None]:
    argv = [sys.executable, "-m", "iam_proxy.policy.testing", str(directory)] + ([only] if only else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise _Crashed(proc.returncode)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise _Crashed(proc.returncode)
    payload = orjson.loads(lines[-1])
    return payload["results"], payload.get("error")


def run_embedded(directory: Path) -> tuple[list[dict], str | None]:
    """Run in a child process; after a crash, once more one test per child to find the culprits."""
    try:
        return _child_run(directory, None)
    except _Crashed:
        pass
    source = load_source(directory, include_tests=True)
    results: list[dict] = []
    for file, pkg, rule in discover(source.modules):
        name = f"data.{pkg}.{rule}"
        try:
            one, error = _child_run(directory, name)
        except _Crashed as crash:
            results.append({"file": file, "name": name, "status": "ERROR",
                            "detail": f"the embedded engine crashed (exit {crash.args[0]}); run with --engine opa"})
            continue
        if error:
            return [], error
        results.extend(one)
    return results, None


def _child(directory: str, only: str | None = None) -> int:
    try:
        results = run_embedded_inprocess(Path(directory), only)
        print(orjson.dumps({"results": results}).decode())
    except PolicyLoadError as exc:
        print(orjson.dumps({"results": [], "error": str(exc)}).decode())
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        print(orjson.dumps({"results": [], "error": f"{type(exc).__name__}: {exc}"[:2000]}).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
