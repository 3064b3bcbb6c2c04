"""CPU per request of the proxy's ASGI app called directly: no server, no load generator, no network.

    python -m bench.inprocess [--mode forward-auth|ext-authz-http|proxy] [--requests 20000]
                              [--no-cache] [--against REV [--rounds 4]] [--profile]

The harness's quick runs move by about 5% from run to run on this shared machine, more than most
single changes to the request path are worth. This measures the path alone: the app is built from
the benchmark's configuration (bench/targets.py) and called with the benchmark's request, one of
2,000 tokens in turn (each verified once before the clock starts), one request at a time on
asyncio's loop; the process's CPU time is read for every chunk of 500 requests. The chunks' lower
quartile is reported: a busy neighbour moves it least. `proxy` mode forwards to the benchmark's
nginx upstream; the others forward nothing.

`--against REV` compares two versions of the code: a git worktree of REV is made in a temporary
directory (with this checkout's bench/, so both are measured alike), runs of it and of this
checkout alternate `--rounds` times, each in a fresh process, and the medians of their lower
quartiles are printed with the change. `--profile` prints cProfile's
top functions instead (its own overhead inflates small Python functions: read it for where calls
go, not for how long they take). docs/performance.md (round nine) quotes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .targets import REPO, REQUEST_PATH, BenchContext, _iam_config, _in_process_policy, start_upstream
from .tokens import TokenMinter

MODES = ("forward-auth", "ext-authz-http", "proxy")
TOKENS = 2_000
CHUNK = 500
CHECK_PREFIX = "/check"  # the ext_authz HTTP listener's path_prefix, as in the Envoy benchmark


def _scope(mode: str, token: bytes) -> dict[str, Any]:
    """The request each mode's front door gets: nginx's auth_request, Envoy's HTTP check, a client's."""
    if mode == "forward-auth":
        path = "/.iam/auth"
        headers = [(b"host", b"127.0.0.1"), (b"authorization", b"Bearer " + token),
                   (b"x-original-uri", REQUEST_PATH.encode()), (b"x-original-method", b"GET"), (b"connection", b"")]
    elif mode == "ext-authz-http":
        path = CHECK_PREFIX + REQUEST_PATH
        headers = [(b"host", b"127.0.0.1:8000"), (b"authorization", b"Bearer " + token),
                   (b"x-forwarded-proto", b"http"), (b"x-request-id", os.urandom(16).hex().encode()),
                   (b"x-envoy-expected-rq-timeout-ms", b"200"), (b"content-length", b"0")]
    else:
        path = REQUEST_PATH
        headers = [(b"host", b"127.0.0.1"), (b"authorization", b"Bearer " + token), (b"user-agent", b"wrk")]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080), "state": {}}


async def _drive(mode: str, requests: int, cache: bool, ctx: BenchContext, profile: bool) -> dict[str, Any]:
    from iam_proxy.app import Proxy
    from iam_proxy.settings.loading import load_settings

    config, _, _ = _iam_config(ctx, "inprocess", _in_process_policy(), None if cache else False, extra={
        "ext_authz": {"http": {"host": "127.0.0.1", "port": 1}, "path_prefix": CHECK_PREFIX,
                      "trusted_peers": ["127.0.0.1/32"]}})
    minter = TokenMinter((REPO / "certs" / "dev-idp-key.pem").read_bytes())
    now = int(time.time())
    tokens = [minter.mint(f"user{i}", now).encode() for i in range(TOKENS)]
    proxy = Proxy(load_settings(config))
    await proxy.start()
    app = proxy.extauthz.http_app if mode == "ext-authz-http" else proxy.proxy_app
    statuses: set[int] = set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    try:
        for token in tokens:
            await app(_scope(mode, token), receive, send)
        if statuses != {200}:
            raise RuntimeError(f"the warm-up was answered {sorted(statuses)}, not only 200")
        profiler = None
        if profile:
            import cProfile
            profiler = cProfile.Profile()
            profiler.enable()
        chunks = []
        for start in range(0, requests, CHUNK):
            began = time.process_time()
            for i in range(start, start + CHUNK):
                await app(_scope(mode, tokens[i % TOKENS]), receive, send)
            chunks.append((time.process_time() - began) / CHUNK * 1e6)
        if profiler is not None:
            import pstats
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        if statuses != {200}:
            raise RuntimeError(f"requests were answered {sorted(statuses)}, not only 200")
    finally:
        await proxy.stop()
    chunks.sort()
    return {"mode": mode, "cache": cache, "requests": len(chunks) * CHUNK,
            "us_per_request_q1": round(chunks[len(chunks) // 4], 1),
            "us_per_request_median": round(chunks[len(chunks) // 2], 1), "us_per_request_min": round(chunks[0], 1)}


def measure(mode: str, requests: int, cache: bool, profile: bool = False) -> dict[str, Any]:
    """One measurement in this process, of the code this process imports."""
    workdir = Path(tempfile.mkdtemp(prefix="iam-inprocess-"))
    jwks = REPO / "certs" / "dev-jwks.json"
    upstream = start_upstream(workdir, jwks)
    try:
        return asyncio.run(_drive(mode, requests, cache, BenchContext(workdir, upstream, jwks), profile))
    finally:
        upstream.service.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _measure_in(root: Path, args: argparse.Namespace) -> float:
    """The lower quartile of one measurement of the code at `root`, in a fresh process."""
    argv = [sys.executable, "-m", "bench.inprocess", "--mode", args.mode, "--requests", str(args.requests),
            *([] if args.cache else ["--no-cache"])]
    proc = subprocess.run(argv, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the measurement in {root} failed:\n{proc.stderr[-3000:]}")
    return float(json.loads(proc.stdout)["us_per_request_q1"])


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate runs of REV's code and this checkout's."""
    with tempfile.TemporaryDirectory(prefix="iam-inprocess-rev-") as tmp:
        other = Path(tmp) / "tree"
        added = subprocess.run(["git", "worktree", "add", "--detach", str(other), args.against], cwd=REPO,
                               capture_output=True, text=True)
        if added.returncode != 0:
            raise SystemExit(f"--against {args.against}: {added.stderr.strip()}")
        try:
            (other / "certs").symlink_to(REPO / "certs")  # generated, not in git (make certs)
            shutil.copytree(REPO / "bench", other / "bench", dirs_exist_ok=True,  # both measured alike
                            ignore=shutil.ignore_patterns("results", "__pycache__"))
            runs: dict[str, list[float]] = {args.against: [], "this checkout": []}
            for _ in range(args.rounds):
                runs[args.against].append(_measure_in(other, args))
                runs["this checkout"].append(_measure_in(REPO, args))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=REPO, capture_output=True)
    before, after = (statistics.median(values) for values in runs.values())
    return {"mode": args.mode, "cache": args.cache, "runs_us_per_request_q1": runs,
            "median_before": before, "median_after": after, "change": f"{100 * (after - before) / before:+.1f}%"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, default="forward-auth")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--no-cache", dest="cache", action="store_false", help="the decision cache off")
    parser.add_argument("--against", metavar="REV", help="a git revision to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if args.requests < CHUNK:
        parser.error(f"--requests: at least {CHUNK}")
    result = compare(args) if args.against else measure(args.mode, args.requests, args.cache, args.profile)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
