"""Per-decision latency of the policy engines, measured in one run on the same input and policies:

    embedded          rego-cpp in process
    opa-lib           OPA's own evaluator in process (Go, as a shared library; iam_proxy/policy/opalib/)
    embedded + cache  the same, through the decision cache (request id and time change every call)
    opa-wasm          OPA's own compiler to WebAssembly (`opa build -t wasm`), run in process by wasmtime
    opa rest          the real `opa run --server` over its REST data API, pooled keep-alive connection

Each figure is the time of `Decider.decide` (engine choice, cache, strict parsing included), one
decision at a time, after a warm-up. Usage:

    .venv/bin/python bench/decision_latency.py [--n 5000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iam_proxy.ops.metrics import Metrics  # noqa: E402
from iam_proxy.policy.cache import DecisionCache  # noqa: E402
from iam_proxy.policy.decider import Decider  # noqa: E402
from iam_proxy.policy.embedded import EmbeddedEngine  # noqa: E402
from iam_proxy.policy.opa_http import OpaHttpEngine  # noqa: E402
from iam_proxy.policy.opa_lib import OpaLibEngine  # noqa: E402
from iam_proxy.policy.opa_wasm import OpaWasmEngine  # noqa: E402
from iam_proxy.settings.policy import DecisionCacheSettings, OpaServerSettings, PolicySettings  # noqa: E402

PATH = "iam/authz/decision"


def policy_input() -> dict:
    """What the proxy builds for `GET /api/invoices/7` by a finance user (fresh id and time)."""
    return {
        "attributes": {
            "source": {"address": {"socketAddress": {"address": "127.0.0.1"}}},
            "destination": {"address": {"socketAddress": {"address": "api.example"}}},
            "request": {"time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "http": {
                "id": uuid.uuid4().hex, "method": "GET", "path": "/api/invoices/7", "host": "api.example",
                "scheme": "http", "query": "", "fragment": "", "size": 0, "protocol": "HTTP/1.1",
                "headers": {"host": "api.example", "authorization": "Bearer eyJ...", "accept": "*/*",
                            "user-agent": "bench"}}},
        },
        "parsed_path": ["api", "invoices", "7"], "parsed_query": {},
        "version": {"ext_authz": "v3", "encoding": "iam-proxy"},
        "identity": {"sub": "alice", "method": "jwt", "iss": "https://idp", "username": "alice",
                     "email": "alice@example.org", "groups": ["finance"], "roles": [], "scopes": [],
                     "attributes": {}},
        "route": {"id": "api", "upstream": "http://upstream", "labels": {}},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def measure(decider: Decider, route: str, n: int) -> list[float]:
    for _ in range(min(200, n)):
        await decider.decide(route, PATH, policy_input())
    samples = []
    for _ in range(n):
        doc = policy_input()
        started = time.perf_counter_ns()
        outcome = await decider.decide(route, PATH, doc)
        samples.append((time.perf_counter_ns() - started) / 1000)
        if not outcome.decision.allowed:
            raise RuntimeError("benchmark input was denied: the policies changed?")
    return samples


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"n": len(samples), "mean_us": round(statistics.fmean(samples), 1),
            "p50_us": round(ordered[len(ordered) // 2], 1), "p99_us": round(ordered[int(len(ordered) * 0.99)], 1)}


async def run(n: int) -> dict:
    """Each engine's figures; an engine that cannot be set up or fails is reported with its error."""
    metrics = Metrics()
    engines: dict = {}
    errors: dict[str, str] = {}
    try:
        engines["embedded"] = EmbeddedEngine(REPO / "policies", [PATH])
    except Exception as exc:  # noqa: BLE001 - reported as this engine's result
        errors["embedded"] = errors["embedded + cache"] = f"{type(exc).__name__}: {exc}"
    try:
        engines["opa-lib"] = OpaLibEngine(REPO / "policies", [PATH])
    except Exception as exc:  # noqa: BLE001
        errors["opa-lib"] = f"{type(exc).__name__}: {exc}"
    try:
        engines["opa-wasm"] = OpaWasmEngine(REPO / "policies", [PATH])
    except Exception as exc:  # noqa: BLE001
        errors["opa-wasm"] = f"{type(exc).__name__}: {exc}"
    opa_binary = os.environ.get("IAM_PROXY_OPA") or str(Path.home() / ".cache" / "iam-proxy" / "bin" / "opa")
    port = free_port()
    opa = remote = None
    try:
        opa = subprocess.Popen([opa_binary, "run", "--server", "--skip-version-check", "--log-level", "error",
                                "--addr", f"127.0.0.1:{port}", str(REPO / "policies")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        remote = OpaHttpEngine(OpaServerSettings(url=f"http://127.0.0.1:{port}", timeout_seconds=2))
        deadline = time.monotonic() + 20
        while not await remote.check_health():
            if time.monotonic() > deadline or opa.poll() is not None:
                raise RuntimeError("OPA did not start (run scripts/install-peers.sh)")
            await asyncio.sleep(0.1)
        engines["opa"] = remote
    except Exception as exc:  # noqa: BLE001
        errors["opa rest"] = f"{type(exc).__name__}: {exc}"
    routes = {"embedded": "embedded", "cached": "embedded", "opa": "opa", "opa-wasm": "opa-wasm",
              "opa-lib": "opa-lib"}
    decider = Decider(engines, {r: e for r, e in routes.items() if e in engines}, frozenset({"cached"}),
                      DecisionCache(DecisionCacheSettings()), metrics)
    results: dict[str, dict] = {}
    try:
        for name, route, engine in (("embedded", "embedded", "embedded"), ("embedded + cache", "cached", "embedded"),
                                    ("opa-lib", "opa-lib", "opa-lib"), ("opa-wasm", "opa-wasm", "opa-wasm"), ("opa rest", "opa", "opa")):
            if name in errors or engine not in engines:
                results[name] = {"error": errors.get(name, "not set up")}
                continue
            try:
                results[name] = summary(await measure(decider, route, n))
            except Exception as exc:  # noqa: BLE001
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if remote is not None:
            await remote.close()
        if opa is not None:
            opa.terminate()
            opa.wait(10)
    return {"policy": "policies/ (iam/authz/decision)", "cores": os.cpu_count(), "default_engine": PolicySettings().default_engine,
            "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="decisions per engine")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(run(args.n))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'engine':<18}{'mean µs':>10}{'p50 µs':>10}{'p99 µs':>10}   (n={args.n}, {report['cores']} cores)")
    for name, row in report["results"].items():
        if "error" in row:
            print(f"{name:<18}failed: {row['error']}")
        else:
            print(f"{name:<18}{row['mean_us']:>10}{row['p50_us']:>10}{row['p99_us']:>10}")


if __name__ == "__main__":
    main()
