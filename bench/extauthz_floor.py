"""What a check costs the ext_authz front doors alone, before any decision is made.

    python -m bench.extauthz_floor [--seconds 5] [--rounds 3] [--out bench/results]

Each server answers every check with the same allowed Verdict (the identity headers, an assertion,
a header to remove), so the pipeline (authentication, policy, assertion, audit) costs nothing here:

    grpc-empty       a grpc.aio servicer that returns an empty OK: the gRPC transport alone
    grpc-front-door  iam-proxy's gRPC service (extauthz/grpc_service.py): the transport, and the
                     CheckRequest read into a Check and the Verdict written as a CheckResponse
    http-front-door  iam-proxy's HTTP-mode app (extauthz/http_service.py) on iam-proxy's listener

Each runs in its own process on uvloop, as iam-proxy does; a load generator in another process
keeps 16 checks in flight (gRPC: a grpc.aio client on 2 channels, as Envoy's worker threads hold a
connection each; HTTP: wrk, 16 connections). The server's CPU per check comes from /proc; the
variants alternate, `--rounds` times, and the medians are reported. Writes `extauthz-floor.json`
and `extauthz-floor.md` to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import procstat
from .loadgen import run_wrk, write_script
from .targets import REPO, free_port, wait_for_port

VARIANTS = ("grpc-empty", "grpc-front-door", "http-front-door")
IN_FLIGHT = 16
CHECK_PATH = "/api/invoices/1"
TOKEN = "eyJhbGciOiJSUzI1NiJ9." + "e" * 600 + ".c2ln"  # a bearer token's size; never verified here


def _verdict() -> Any:
    from iam_proxy.extauthz.check import Verdict

    return Verdict(allowed=True, status=200, decision_id="bench",
                   upstream_headers=[("x-forwarded-user", "alice"), ("x-forwarded-groups", "finance"),
                                     ("x-iam-assertion", "e" * 480)],
                   remove_headers=["authorization"])


# ---------------------------------------------------------------- the servers (child processes)


async def _serve_grpc(variant: str, port: int) -> None:
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2 as pb
    from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
    from google.rpc import code_pb2, status_pb2

    from iam_proxy.extauthz.grpc_service import start_grpc
    from iam_proxy.settings.listeners import Listener

    verdict = _verdict()

    async def decide(check: Any) -> Any:
        return verdict

    if variant == "grpc-front-door":
        server = await start_grpc(Listener(host="127.0.0.1", port=port), decide)
    else:
        ok = pb.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))

        class Empty(pb_grpc.AuthorizationServicer):
            async def Check(self, request: Any, context: Any) -> Any:
                return ok

        server = grpc.aio.server()
        pb_grpc.add_AuthorizationServicer_to_server(Empty(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
    await server.wait_for_termination()


async def _serve_http(port: int) -> None:
    import uvicorn

    from iam_proxy.audit.metrics import Board
    from iam_proxy.extauthz.http_service import HttpCheckApp
    from iam_proxy.listener.counters import ListenerCounters
    from iam_proxy.listener.guard import Guard
    from iam_proxy.settings.limits import ListenerLimits

    verdict = _verdict()

    async def decide(check: Any) -> Any:
        return verdict

    app = HttpCheckApp(decide, ["127.0.0.1/32"], "/check")
    guard = Guard("ext_authz_http", ListenerLimits(), ListenerCounters(Board()), None)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=guard, loop="none",  # type: ignore[arg-type]
                            lifespan="off", log_level="warning", access_log=False, server_header=False,
                            date_header=True, proxy_headers=False)  # as iam_proxy/server.py
    await uvicorn.Server(config).serve()


def serve(variant: str, port: int) -> None:
    import uvloop

    uvloop.run(_serve_http(port) if variant == "http-front-door" else _serve_grpc(variant, port))


# ---------------------------------------------------------------- the load


def _check_request() -> Any:
    from envoy.service.auth.v3 import external_auth_pb2 as pb

    request = pb.CheckRequest()
    attributes = request.attributes
    attributes.source.address.socket_address.address = "127.0.0.5"
    attributes.source.address.socket_address.port_value = 40000
    attributes.destination.address.socket_address.address = "127.0.0.1"
    attributes.destination.address.socket_address.port_value = 8000
    http = attributes.request.http
    http.id, http.method, http.path, http.host = "1", "GET", CHECK_PATH, "app.test"
    http.scheme, http.protocol = "http", "HTTP/1.1"
    for name, value in ((":authority", "app.test"), (":path", CHECK_PATH), (":method", "GET"),
                        (":scheme", "http"), ("authorization", f"Bearer {TOKEN}"), ("user-agent", "wrk"),
                        ("x-forwarded-proto", "http"), ("x-request-id", "5f0c")):
        http.headers[name] = value
    return request


async def _grpc_load(port: int, seconds: float) -> tuple[int, int]:
    """(checks answered OK, checks that were not), keeping IN_FLIGHT in flight for `seconds`."""
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc

    request = _check_request()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(2)]
    stubs = [pb_grpc.AuthorizationStub(channel) for channel in channels]
    counts = [0, 0]
    deadline = time.monotonic() + seconds

    async def caller(stub: Any) -> None:
        while time.monotonic() < deadline:
            response = await stub.Check(request, timeout=5)
            counts[0 if response.status.code == 0 else 1] += 1

    try:
        await asyncio.gather(*(caller(stubs[i % 2]) for i in range(IN_FLIGHT)))
    finally:
        for channel in channels:
            await channel.close()
    return counts[0], counts[1]


def _load(variant: str, port: int, seconds: int, workdir: Path) -> tuple[int, int]:
    if variant == "http-front-door":
        script = write_script(workdir, path=f"/check{CHECK_PATH}", token=TOKEN)
        result = run_wrk(f"http://127.0.0.1:{port}/check{CHECK_PATH}", script, threads=1,
                         connections=IN_FLIGHT, seconds=seconds)
        return result.requests - result.errors, result.errors
    import uvloop

    return uvloop.run(_grpc_load(port, seconds))


def measure(variant: str, seconds: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    log = open(workdir / f"{variant}.log", "ab")
    server = subprocess.Popen([sys.executable, "-m", "bench.extauthz_floor", "--serve", variant, "--port", str(port)],
                              cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, server)
        _load(variant, port, 1, workdir)  # warm-up
        before = procstat.cpu_seconds([server.pid])
        started = time.monotonic()
        ok, failed = _load(variant, port, seconds, workdir)
        elapsed = time.monotonic() - started
        cpu = procstat.cpu_seconds([server.pid]) - before
    finally:
        server.terminate()
        server.wait(10)
        log.close()
    if failed or not ok:
        raise RuntimeError(f"{variant}: {failed} of {ok + failed} checks were not answered OK")
    return {"checks_per_s": round(ok / elapsed), "cpu_us_per_check": round(cpu * 1e6 / ok, 1), "checks": ok}


def run(seconds: int, rounds: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="iam-extauthz-floor-"))
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            runs[variant].append(measure(variant, seconds, workdir))
    rows = []
    for variant in VARIANTS:
        rows.append({"name": variant,
                     "cpu_us_per_check": statistics.median(r["cpu_us_per_check"] for r in runs[variant]),
                     "checks_per_s": statistics.median(r["checks_per_s"] for r in runs[variant]),
                     "runs": runs[variant]})
    return {"at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": seconds, "rounds": rounds,
            "in_flight": IN_FLIGHT, "rows": rows}


def report(result: dict[str, Any]) -> str:
    lines = [f"# ext_authz front doors, no decision ({result['at']})", "",
             f"{result['in_flight']} checks in flight, {result['seconds']:g} s per run, medians of "
             f"{result['rounds']} alternating runs; CPU of the server process per check (/proc, in steps of 10 ms "
             "over the run).", "", "| server | CPU us per check | checks/s |", "|---|---:|---:|"]
    lines += [f"| {row['name']} | {row['cpu_us_per_check']:.0f} | {row['checks_per_s']:,.0f} |" for row in result["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.extauthz_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)  # the server child
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    result = run(args.seconds, args.rounds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "extauthz-floor.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "extauthz-floor.md").write_text(report(result))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
