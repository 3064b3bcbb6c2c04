"""Evaluates differential cases in the embedded engine, in a child process of the test run.

rego-cpp can crash the whole process (SIGSEGV), so the suite keeps the engine out of the pytest
process: a crash fails the cases it hit instead of the run. Protocol, one JSON object per line:
request `{"dir": ..., "path": ..., "inputs": [...]}`, answer `{"refused": "file:line: ..."}` or
`{"results": [{"value": ...} | {"undefined": true} | {"error": "..."}, ...]}`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson

from iam_proxy.policy.embedded import EmbeddedEngine
from iam_proxy.policy.engine import PolicyEvaluationError, UndefinedDecision
from iam_proxy.policy.source import PolicyLoadError


async def evaluate(directory: str, path: str, inputs: list) -> dict:
    try:
        # exactly what the proxy does: load the directory, compile, smoke-evaluate, then decide()
        engine = EmbeddedEngine(Path(directory), [path])
    except PolicyLoadError as exc:
        return {"refused": str(exc)}
    results = []
    for policy_input in inputs:
        try:
            results.append({"value": (await engine.decide(path, policy_input)).value})
        except UndefinedDecision:
            results.append({"undefined": True})
        except PolicyEvaluationError as exc:
            results.append({"error": str(exc)})
    return {"results": results}


def main() -> int:
    # rego-cpp's `print` writes to file descriptor 1: answers go to a private copy of it instead.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    for line in sys.stdin.buffer:
        request = orjson.loads(line)
        answer = asyncio.run(evaluate(request["dir"], request["path"], request["inputs"]))
        answers.write(orjson.dumps(answer) + b"\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
