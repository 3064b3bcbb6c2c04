"""OPA's own conformance cases, run through the embedded engine exactly as the proxy runs a policy.

The cases come from OPA's source at the pinned version (scripts/versions.env), which `go install`
leaves in the Go module cache: `v1/test/cases/testdata/v1/**/*.yaml`, each with modules, data, an
input, a query and OPA's answer. A case the proxy can express is one decision: the query
`data.a.b.r = x` is the decision path `a/b/r`, the input is a JSON object, and OPA's answer is one
value of `x` (or none: undefined, or an error). Each is loaded with `EmbeddedEngine` (lint, guards,
the bounded load-time check, the smoke evaluation) and decided with `EmbeddedEngine.decide`, in a
pool of child processes (conformance_worker.py) bounded in time and memory, and classified:

    agrees           the same value; or both without a value (undefined, error) where OPA errs
    refused          the engine refused the policy at load (fail closed, with a message)
    different        a value other than OPA's, or a value where OPA has none: silent, the worst case
    crash / hang     the child died, or did not answer within the case timeout
    not-expressible  not one decision path of the proxy (other query shapes, several results, ...)

Run by itself: `python tests/conformance/runner.py [--json out.json] [--show different]`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import orjson
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("conformance_worker.py")
OUTCOMES = ("agrees", "refused", "different", "crash", "hang", "not-expressible")
CASE_TIMEOUT = 30.0  # seconds per case, load included; the proxy's own load-time bound is far below
CASE_MEMORY = 2 << 30  # bytes of resident memory per worker (rego-cpp reserves too much address space for RLIMIT_AS)
# OPA's errors that its default (non-strict) evaluation turns into undefined: the embedded engine may
# answer undefined there. A conflict stays an error in OPA, so it must be an error (or a refusal) here.
BUILTIN_ERRORS = {"eval_builtin_error", "eval_type_error"}


def opa_version() -> str:
    for line in (REPO / "scripts" / "versions.env").read_text().splitlines():
        if line.startswith("OPA_VERSION="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError("scripts/versions.env has no OPA_VERSION")


def cases_dir() -> Path:
    modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    path = Path(modcache) / "github.com" / "open-policy-agent" / f"opa@{opa_version()}" / "v1" / "test" / "cases" \
        / "testdata" / "v1"
    if not path.is_dir():
        raise RuntimeError(f"OPA's conformance cases are not at {path}: run scripts/install-peers.sh opa")
    return path


@dataclass
class Case:
    id: str  # file (relative to the cases directory) # index
    raw: dict[str, Any]
    path: str = ""  # the decision path, when expressible
    input: Any = None
    why_not: str = ""  # why the case is not expressible as one decision


def load_cases(root: Path) -> list[Case]:
    cases = []
    for file in sorted(root.rglob("*.yaml")):
        document = yaml.safe_load(file.read_text()) or {}
        for i, raw in enumerate(document.get("cases") or []):
            case = Case(f"{file.relative_to(root)}#{i}", raw)
            case.why_not = _expressible(case)
            cases.append(case)
    return cases


def _expressible(case: Case) -> str:
    raw = case.raw
    query = raw.get("query", "").strip()
    parts = query.split(" = ")
    if len(parts) != 2 or not parts[0].startswith("data.") or not parts[1].isidentifier() \
            or parts[1] in ("input", "data"):
        return "query is not `data.<path> = <var>`"
    ref, var = parts
    if not all(segment.isidentifier() for segment in ref.split(".")[1:]) or ref.count(".") < 1:
        return "the decision path is not a plain rule reference"
    if "want_result" in raw and (len(raw["want_result"] or []) > 1 or
                                 any(set(row) != {var} for row in raw["want_result"] or [])):
        return "more than one result, or other bindings"
    if "want_result" not in raw and "want_error" not in raw and "want_error_code" not in raw:
        return "no expected outcome"
    if "input_term" in raw:
        try:
            case.input = json.loads(raw["input_term"])
        except json.JSONDecodeError:
            return "input is a Rego term, not JSON"
    elif "input" in raw:
        case.input = raw["input"]
    else:
        text = " ".join(raw.get("modules") or [])
        if "input" in text:
            return "no input, and the policy reads input (the proxy always hands it one)"
        case.input = {}
    if not isinstance(case.input, dict):
        return "input is not an object"
    if not isinstance(raw.get("data", {}), dict):
        return "data is not an object"
    try:
        orjson.dumps([case.input, raw.get("data")])
    except TypeError:
        return "input or data has keys that are not strings (not JSON)"
    case.path = "/".join(ref.split(".")[1:])
    return ""


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return got == want
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def classify(case: Case, answer: dict[str, Any]) -> str:
    """One of OUTCOMES for the worker's `answer` (see conformance_worker.py)."""
    if "crash" in answer or "exception" in answer:
        return "crash"
    if "hang" in answer:
        return "hang"
    if "refused" in answer:
        return "refused"
    raw = case.raw
    if ("want_error" in raw or "want_error_code" in raw) and "want_result" in raw and "error" in answer:
        return "agrees"  # a strict-mode error whose non-strict answer (want_result) OPA also gives
    if ("want_error" in raw or "want_error_code" in raw) and "want_result" not in raw:
        if "error" in answer:
            return "agrees"
        builtin_error = raw.get("want_error_code") in BUILTIN_ERRORS or (
            "want_error_code" not in raw and raw.get("strict_error"))  # a built-in's type error, in strict mode
        if "undefined" in answer and builtin_error:
            return "agrees"
        return "different"
    rows = raw["want_result"] or []
    if not rows:
        return "agrees" if "undefined" in answer else "different"
    if "value" not in answer:
        return "different"
    want = next(iter(rows[0].values()))
    got = answer["value"]
    if raw.get("sort_bindings") and isinstance(want, list) and isinstance(got, list):
        want, got = sorted(want, key=_canonical), sorted(got, key=_canonical)
    return "agrees" if _same(got, want) else "different"


# ---------------------------------------------------------------- the pool of bounded children


def _rss(pid: int) -> int:
    """Resident bytes of `pid` and its children (the proxy's load-time check forks one)."""
    total = 0
    for task in [pid, *_children(pid)]:
        try:
            total += int(Path(f"/proc/{task}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Worker:
    """One child running conformance_worker.py; killed and replaced when a case hangs or crashes it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, cwd=REPO,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(orjson.dumps(request) + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return {"crash": self.proc.wait()}
        deadline = time.monotonic() + timeout
        while not select.select([self.proc.stdout], [], [], 0.05)[0]:
            if time.monotonic() > deadline or _rss(self.proc.pid) > CASE_MEMORY:
                self.proc.kill()
                self.proc.wait()
                return {"hang": timeout}
        line = self.proc.stdout.readline()
        if not line:
            return {"crash": self.proc.wait()}
        return orjson.loads(line)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.alive:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(10)


@dataclass
class Report:
    outcomes: dict[str, str] = field(default_factory=dict)  # case id -> outcome
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # case id -> worker answer
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        counter = collections.Counter(self.outcomes.values())
        return {outcome: counter.get(outcome, 0) for outcome in OUTCOMES}

    def cases(self, outcome: str) -> Iterator[str]:
        return (case for case, got in sorted(self.outcomes.items()) if got == outcome)


def run(cases: list[Case], workers: int | None = None, timeout: float = CASE_TIMEOUT,
        engine: str = "embedded") -> Report:
    report = Report()
    started = time.monotonic()
    todo: queue.Queue[Case] = queue.Queue()
    for case in cases:
        if case.why_not:
            report.outcomes[case.id] = "not-expressible"
        else:
            todo.put(case)
    lock = threading.Lock()

    def serve() -> None:
        worker = Worker()
        while True:
            try:
                case = todo.get_nowait()
            except queue.Empty:
                break
            if not worker.alive:
                worker = Worker()
            answer = worker.ask({"modules": case.raw.get("modules") or [], "data": case.raw.get("data") or {},
                                 "path": case.path, "input": case.input, "engine": engine}, timeout)
            with lock:
                report.answers[case.id] = answer
                report.outcomes[case.id] = classify(case, answer)
        worker.close()

    threads = [threading.Thread(target=serve) for _ in range(workers or os.cpu_count() or 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.monotonic() - started
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write every case's outcome and answer here")
    parser.add_argument("--show", action="append", default=[], choices=OUTCOMES, help="list the cases of an outcome")
    parser.add_argument("--only", help="run only cases whose id contains this")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--engine", default="embedded", choices=("embedded", "opa-lib", "opa-wasm", "embedded-without-opa"))
    args = parser.parse_args()
    cases = [c for c in load_cases(cases_dir()) if not args.only or args.only in c.id]
    report = run(cases, args.workers, engine=args.engine)
    by_id = {c.id: c for c in cases}
    for outcome in args.show:
        for case_id in report.cases(outcome):
            case = by_id[case_id]
            print(f"{outcome}: {case_id} {case.raw.get('note')}: {case.why_not or report.answers.get(case_id)}"
                  f" want={case.raw.get('want_result', case.raw.get('want_error_code'))}")
    print(json.dumps(report.counts()), f"{report.seconds:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"counts": report.counts(), "outcomes": report.outcomes,
                                         "answers": report.answers}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
