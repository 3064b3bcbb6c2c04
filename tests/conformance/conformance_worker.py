"""The embedded engine in a child of the conformance runner (runner.py): one case per request line.

Request `{"modules": [...], "data": {...}, "path": "a/b", "input": {...}, "engine": "embedded" | "opa-lib" | "opa-wasm"
| "embedded-without-opa"}`; answer, one JSON line:
`{"refused": msg}` (load), `{"value": v}`, `{"undefined": true}`, `{"error": msg}` (evaluation), or
`{"exception": "Type: msg"}` when something other than the engine's own errors escaped (a crash of ours).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import orjson

from iam_proxy.policy import opa_tool
from iam_proxy.policy.embedded import EmbeddedEngine
from iam_proxy.policy.engine import PolicyEvaluationError, UndefinedDecision
from iam_proxy.policy.opa_lib import OpaLibEngine
from iam_proxy.policy.opa_wasm import OpaWasmEngine
from iam_proxy.policy.source import PolicyLoadError, PolicySource

ENGINES = {"embedded": EmbeddedEngine, "opa-lib": OpaLibEngine, "opa-wasm": OpaWasmEngine,
           "embedded-without-opa": EmbeddedEngine}


def evaluate(request: dict[str, Any]) -> dict[str, Any]:
    modules = {f"case/module-{i}.rego": text for i, text in enumerate(request["modules"])}
    source = PolicySource(modules, request["data"], "conformance", ())
    if request.get("engine") == "embedded-without-opa":  # as on a machine with no opa binary (make run)
        opa_tool.find = lambda: None
    try:
        # as the proxy loads a bundle: lint, guards, bounded load-time check, smoke evaluation
        engine = ENGINES[request.get("engine", "embedded")](None, [request["path"]], source=source)
    except PolicyLoadError as exc:
        return {"refused": str(exc)}
    try:
        return {"value": asyncio.run(engine.decide(request["path"], request["input"])).value}
    except UndefinedDecision:
        return {"undefined": True}
    except PolicyEvaluationError as exc:
        return {"error": str(exc)}


def main() -> int:
    # rego-cpp's `print` writes to file descriptor 1: answers go to a private copy of it instead.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    for line in sys.stdin.buffer:
        try:
            answer = evaluate(orjson.loads(line))
        except Exception as exc:  # noqa: BLE001 - reported to the runner, which counts it as a crash
            answer = {"exception": f"{type(exc).__name__}: {exc}"}
        answers.write(orjson.dumps(answer, default=str) + b"\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
