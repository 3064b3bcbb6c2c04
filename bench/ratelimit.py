"""What a rate limit check costs, next to a bare Redis round trip in the same run.

A real redis-server on a loopback port; every Redis figure goes through the same redis-py async
client and BlockingConnectionPool the proxy uses:

    redis PING            the peer: one round trip and nothing else
    redis GCRA, 1 limit   RedisStore.check: the Lua script (EVALSHA), one round trip
    redis GCRA, 3 limits  three counters checked and advanced in the same script call
    memory GCRA, 1 limit  MemoryStore.check (no Redis configured)
    admit, memory         Traffic.admit: keys, digests, GCRA and the RateLimit headers

Each figure is the median over rounds of the mean time per call (sequential calls), plus the calls
per second with 64 in flight. Usage:

    .venv/bin/python -m bench.ratelimit [--n 2000] [--rounds 7] [--out bench/results/ratelimit.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry  # noqa: E402

from iam_proxy.authn.identity import Identity  # noqa: E402
from iam_proxy.ratelimit import Traffic  # noqa: E402
from iam_proxy.ratelimit.config import RateLimitSettings, RedisLimitStore  # noqa: E402
from iam_proxy.ratelimit.gcra import Counter, MemoryStore  # noqa: E402
from iam_proxy.ratelimit.redis_store import RedisStore  # noqa: E402

ALICE = Identity(sub="alice", method="jwt", iss="https://idp", attributes={"client_id": "billing"})
LIMITS = {"limits": [{"id": "per-client", "key": "client", "requests": 10**9, "per_seconds": 1}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def timed(call: Callable[[], Awaitable[object]], n: int, rounds: int) -> dict[str, float]:
    means = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            await call()
        means.append((time.perf_counter() - started) / n * 1e6)
    started = time.perf_counter()
    await asyncio.gather(*(_loop(call, n // 64 or 1) for _ in range(64)))
    concurrent = 64 * (n // 64 or 1) / (time.perf_counter() - started)
    return {"median_us": round(statistics.median(means), 1), "calls_per_s_64_in_flight": round(concurrent)}


async def _loop(call: Callable[[], Awaitable[object]], n: int) -> None:
    for _ in range(n):
        await call()


async def measure(redis_url: str, n: int, rounds: int) -> dict[str, dict[str, float]]:
    store = RedisStore(RedisLimitStore(url=redis_url, timeout_seconds=1))
    one = [Counter("bench:a", 1e-6, 1e9)]
    three = one + [Counter("bench:b", 1e-6, 1e9), Counter("bench:c", 1e-6, 1e9)]
    memory = MemoryStore(100_000)
    gate = Traffic(RateLimitSettings.model_validate(LIMITS), CollectorRegistry())
    results = {
        "redis PING": await timed(store._redis.ping, n, rounds),
        "redis GCRA, 1 limit": await timed(lambda: store.check(one), n, rounds),
        "redis GCRA, 3 limits": await timed(lambda: store.check(three), n, rounds),
        "memory GCRA, 1 limit": await timed(lambda: memory.check(one), n, rounds),
        "admit, memory": await timed(lambda: gate.admit(ALICE, "api", "10.0.0.1", None, True), n, rounds),
    }
    await store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ratelimit.json")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
                                   "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
                                  stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            results = asyncio.run(measure(f"redis://127.0.0.1:{port}/0", args.n, args.rounds))
        finally:
            server.terminate()
            server.wait()
    ping = results["redis PING"]["median_us"]
    for row in results.values():
        row["vs_ping"] = round(row["median_us"] / ping, 2)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, row in results.items():
        print(f"{name:22} {row['median_us']:8.1f} us  x{row['vs_ping']:<5} {row['calls_per_s_64_in_flight']:>8} calls/s")


if __name__ == "__main__":
    main()
