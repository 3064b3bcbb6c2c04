"""The hot-path building blocks, measured side by side: ASGI server x upstream HTTP client.

    .venv/bin/python -m bench.stack [--seconds 5] [--repeats 3]

Each combination serves bench/stack_app.py in one process (no policy, no audit), in front of the
same nginx upstream as the main harness, under the same wrk load (2 threads, 32 connections,
closed loop). "none" answers without forwarding: the server's own ceiling. Writes
bench/results/stack.{json,md}; docs/performance.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .loadgen import run_wrk, write_script
from .targets import REPO, Service, free_port, start_upstream, wait_for_port

SERVERS = ("uvicorn", "granian")
CLIENTS = ("none", "aiohttp", "httpx", "http1")


def _argv(server: str, port: int) -> list[str]:
    python = str(REPO / ".venv" / "bin" / "python")
    if server == "uvicorn":
        return [python, "-m", "uvicorn", "bench.stack_app:app", "--host", "127.0.0.1", "--port", str(port),
                "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
    return [python, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--loop", "uvloop", "--no-access-log", "--log-level", "warning", "bench.stack_app:app"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="iam-stack-"))
    upstream = start_upstream(workdir, REPO / "certs" / "dev-jwks.json")
    script = write_script(workdir, path="/api/invoices/1", token="x")
    rows = []
    try:
        for server in args.servers.split(","):
            for client in args.clients.split(","):
                port = free_port()
                env = {**os.environ, "STACK_CLIENT": client, "STACK_UPSTREAM": upstream.url}
                service = Service(f"{server}-{client}", _argv(server, port), workdir, env=env)
                try:
                    wait_for_port(port, service.proc)
                    url = f"http://127.0.0.1:{port}/api/invoices/1"
                    run_wrk(url, script, threads=2, connections=32, seconds=1)  # warm-up
                    runs = [run_wrk(url, script, threads=2, connections=32, seconds=args.seconds)
                            for _ in range(args.repeats)]
                finally:
                    service.stop()
                row = {"server": server, "client": client,
                       "rps": statistics.median(r.rps for r in runs),
                       "p50_ms": statistics.median(r.p50_ms for r in runs),
                       "p99_ms": statistics.median(r.p99_ms for r in runs),
                       "errors": sum(r.errors for r in runs)}
                rows.append(row)
                print(f"{server:8} {client:8} {row['rps']:9,.0f} req/s  p50 {row['p50_ms']:.2f} ms  "
                      f"errors {row['errors']}", file=sys.stderr)
    finally:
        upstream.service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stack.json").write_text(json.dumps({"taken": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                "load_average": os.getloadavg(), "rows": rows}, indent=1))
    lines = [f"# Server x client ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
             f"{os.getloadavg()[0]:.1f})", "",
             f"wrk 2 threads, 32 connections, {args.repeats} x {args.seconds:g} s (median); one process each", "",
             "| server | upstream client | req/s | p50 ms | p99 ms | errors |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['server']} | {r['client']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['errors']} |" for r in rows]
    (out / "stack.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
