"""What the listener's guards cost: uvicorn's own httptools protocol against listener/ (GuardedHttp,
and TLS through WatchedTLS), serving the same trivial ASGI app, in the same run.

    in process   one request head fed to each protocol over a fake transport, answered by the app:
                 µs per request, medians of alternating rounds (the difference is the guards' cost)
    wrk          each protocol in its own server process, one core, wrk closed loop, alternating
                 runs: median req/s and p50, and the ratio guarded / stock (plain HTTP and TLS)

Usage:
    .venv/bin/python -m bench.listener [--quick] [--out bench/results/listener.json]
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
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import uvicorn  # noqa: E402
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from bench.loadgen import run_wrk, write_script  # noqa: E402
from iam_proxy.audit.metrics import Board  # noqa: E402
from iam_proxy.devcerts import make_dev_certs  # noqa: E402
from iam_proxy.listener.counters import ListenerCounters  # noqa: E402
from iam_proxy.listener.guard import Guard  # noqa: E402
from iam_proxy.listener.limits import ListenerLimits  # noqa: E402

REQUEST = (b"GET /api/invoices/7?page=2 HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer eyJhbGciOiJSUzI1NiJ9"
           b".eyJzdWIiOiJhIn0.c2ln\r\nAccept: application/json\r\nUser-Agent: bench/1.0\r\nAccept-Encoding: gzip"
           b"\r\nX-Request-Id: 7f1c\r\nCookie: theme=dark\r\n\r\n")


async def app(scope: dict[str, Any], receive, send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _guard(tls: Any = None) -> Guard:
    return Guard("proxy", ListenerLimits(), ListenerCounters(Board()), tls)


def _config(http: Any) -> uvicorn.Config:
    return uvicorn.Config(app, http=http, loop="none", lifespan="off", log_level="warning", access_log=False,
                          server_header=False, date_header=True, proxy_headers=False)  # as iam_proxy/server.py


# ---------------------------------------------------------------- in process


class _Transport:
    """Just enough of a transport for the protocol: writes are counted, never sent."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _per_request_us(make_protocol, n: int) -> float:
    protocol = make_protocol()
    transport = _Transport()
    protocol.connection_made(transport)
    started = time.thread_time_ns()  # CPU time: the machine's other processes do not count
    for _ in range(n):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the app's task runs and answers
        await asyncio.sleep(0)
    elapsed = time.thread_time_ns() - started
    if transport.written < n:
        raise RuntimeError(f"only {transport.written} of {n} requests were answered")
    protocol.connection_lost(None)
    return elapsed / 1000 / n


async def _in_process(n: int, rounds: int) -> dict[str, Any]:
    config = _config("httptools")
    config.load()
    state = ServerState()
    guard = _guard()
    makers = {"stock": lambda: HttpToolsProtocol(config, state, {}),
              "guarded": lambda: guard(config, state, {})}
    samples: dict[str, list[float]] = {name: [] for name in makers}
    for name, make in makers.items():  # warm up
        await _per_request_us(make, min(n, 2000))
    for _ in range(rounds):
        for name, make in makers.items():
            samples[name].append(await _per_request_us(make, n))
    stock, guarded = (statistics.median(samples[k]) for k in ("stock", "guarded"))
    return {"n": n, "rounds": rounds, "stock_us": round(stock, 2), "guarded_us": round(guarded, 2),
            "guards_us": round(guarded - stock, 2), "ratio": round(guarded / stock, 3)}


def in_process(n: int = 2000, rounds: int = 15) -> dict[str, Any]:
    import uvloop

    return uvloop.run(_in_process(n, rounds))


# ---------------------------------------------------------------- wrk against server processes


def _serve(port: int, kind: str, cert: str | None, key: str | None) -> None:
    import logging
    import ssl

    import uvloop

    # wrk and the readiness probe close connections mid-handshake: counted, not worth a line here
    logging.getLogger("iam_proxy.listener").setLevel(logging.ERROR)
    context = None
    if cert and key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    config = _config(_guard(context) if kind == "guarded" else "httptools")
    if kind == "stock" and context is not None:
        config.ssl_certfile, config.ssl_keyfile = cert, key
    config.port = port
    uvloop.run(uvicorn.Server(config).serve())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(kind: str, tls: Path | None) -> tuple[subprocess.Popen, str]:
    """`tls`: a directory with the dev certificates (iam_proxy/devcerts.py), or None for plain HTTP."""
    port = _free_port()
    argv = [sys.executable, "-m", "bench.listener", "--serve", str(port), "--kind", kind]
    if tls is not None:
        argv += ["--cert", str(tls / "server.pem"), "--key", str(tls / "server-key.pem")]
    proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/api/invoices/7"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the {kind} server did not start")


def wrk_pair(tls: bool, repeats: int, seconds: float, connections: int = 32) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        certs = None
        if tls:
            certs = Path(tmp) / "certs"
            make_dev_certs(certs)
        return _wrk_pair(certs, Path(tmp), repeats, seconds, connections)


def _wrk_pair(certs: Path | None, tmp: Path, repeats: int, seconds: float, connections: int) -> dict[str, Any]:
    script = write_script(tmp, path="/api/invoices/7", token="eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    servers = {kind: _start(kind, certs) for kind in ("stock", "guarded")}
    rows: dict[str, list] = {kind: [] for kind in servers}
    try:
        for _, url in servers.values():  # warm up
            run_wrk(url, script, threads=1, connections=connections, seconds=1)
        for _ in range(repeats):  # alternating, so a noisy neighbour hits both alike
            for kind, (_, url) in servers.items():
                rows[kind].append(run_wrk(url, script, threads=1, connections=connections, seconds=seconds))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
    out: dict[str, Any] = {"repeats": repeats, "seconds": seconds, "connections": connections}
    for kind, results in rows.items():
        out[kind] = {"rps": round(statistics.median(r.rps for r in results)),
                     "p50_ms": round(statistics.median(r.p50_ms for r in results), 3),
                     "errors": sum(r.errors for r in results)}
    out["ratio"] = round(out["guarded"]["rps"] / out["stock"]["rps"], 3)
    return out


def run(quick: bool) -> dict[str, Any]:
    repeats, seconds = (3, 2.0) if quick else (5, 5.0)
    return {"in_process": in_process(2000, 15 if quick else 41),
            "plain": wrk_pair(False, repeats, seconds), "tls": wrk_pair(True, repeats, seconds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", help="also write the report (JSON) here")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=("stock", "guarded"), help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.kind, args.cert, args.key)
        return 0
    report = run(args.quick)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    p = report["in_process"]
    print(f"in process: {p['stock_us']} µs per request with uvicorn's protocol, {p['guarded_us']} µs guarded "
          f"(+{p['guards_us']} µs, ratio {p['ratio']}; medians of {p['rounds']} rounds)")
    for name in ("plain", "tls"):
        w = report[name]
        print(f"wrk {name:<5}: {w['stock']['rps']:,} req/s stock, {w['guarded']['rps']:,} guarded "
              f"(ratio {w['ratio']}); p50 {w['stock']['p50_ms']} / {w['guarded']['p50_ms']} ms; errors "
              f"{w['stock']['errors']} / {w['guarded']['errors']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
