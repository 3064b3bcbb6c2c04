"""What a request costs when it arrives on its own: latency and CPU per request after an idle gap.

    python -m bench.cold [--gaps 0,1,5,20] [--requests 400] [--out bench/results]

One client connection sends one request at a time and sleeps `gap` ms between a response and the
next request, to each target in turn (one process, one worker). For each gap it reports the median
latency and the target's CPU per request (all its threads, from /proc). Then the same for a few of
the request's parts, called in this process: each part's time back to back, and after sleeping
20 ms. On a shared machine the caches lose a process's code and data while it sleeps, so a part
that touches more memory costs more after a gap than in a loop; the light-load row of `make bench`
(200 req/s over 4 connections, about 20 ms between a connection's requests) sees exactly this.
Writes `cold.json` and `cold.md` to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from . import procstat
from .targets import (REPO, REQUEST_PATH, BenchContext, Running, start_iam_proxy, start_iam_proxy_nocache,
                      start_nginx_proxy, start_oauth2_proxy, start_upstream, start_upstream_direct)
from .tokens import TokenMinter

TARGETS: dict[str, Callable[[BenchContext], Running]] = {
    "upstream-direct": start_upstream_direct,
    "nginx-proxy": start_nginx_proxy,
    "iam-proxy": start_iam_proxy,
    "iam-proxy-nocache": start_iam_proxy_nocache,
    "oauth2-proxy": start_oauth2_proxy,
}
PART_GAP_S = 0.020


def _read_response(sock: socket.socket) -> None:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the target closed the connection")
        data += chunk
        head, found, body = data.partition(b"\r\n\r\n")
        if not found:
            continue
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if length is None:
            raise RuntimeError("the response has no Content-Length")
        if len(body) >= length:
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"expected 200, got {head.splitlines()[0]!r}")
            return


def one_at_a_time(running: Running, token: str, gap_s: float, requests: int) -> dict[str, float]:
    host, port = running.url.removeprefix("http://").split(":")
    request = (f"GET {REQUEST_PATH} HTTP/1.1\r\nHost: api.example\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode()
    tree = [p for root in running.proxy_pids for p in procstat.descendants(root)]
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(50):  # warm-up: the connection, the proxy's caches
            sock.sendall(request)
            _read_response(sock)
        cpu_before = procstat.cpu_seconds(tree)
        latencies = []
        for _ in range(requests):
            if gap_s:
                time.sleep(gap_s)
            started = time.perf_counter()
            sock.sendall(request)
            _read_response(sock)
            latencies.append((time.perf_counter() - started) * 1000)
        cpu = procstat.cpu_seconds(tree) - cpu_before
    return {"gap_ms": gap_s * 1000, "p50_ms": round(statistics.median(latencies), 3),
            "cpu_ms_per_request": round(cpu * 1000 / requests, 3)}


def _time_part(call: Callable[[], Any], gap_s: float, n: int) -> float:
    samples = []
    for _ in range(n):
        if gap_s:
            time.sleep(gap_s)
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1e6)
    return round(statistics.median(samples), 1)


def parts(token: str, samples: int) -> list[dict[str, Any]]:
    """A few parts of the request, each back to back and after a 20 ms sleep (microseconds)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from bench.decision_latency import PATH, policy_input
    from iam_proxy.policy.opa_lib import OpaLibEngine

    message = token.encode()[:400]
    p256 = ec.generate_private_key(ec.SECP256R1())
    edwards = ed25519.Ed25519PrivateKey.generate()
    engine = OpaLibEngine(REPO / "policies", [PATH])
    loop = asyncio.new_event_loop()
    document = policy_input()
    calls: dict[str, Callable[[], Any]] = {
        "ES256 signature (the assertion)": lambda: p256.sign(message, ec.ECDSA(hashes.SHA256())),
        "Ed25519 signature (for comparison)": lambda: edwards.sign(message),
        "opa-lib decision (policies/)": lambda: loop.run_until_complete(engine.decide(PATH, document)),
    }
    rows = []
    try:
        for name, call in calls.items():
            _time_part(call, 0, samples)
            rows.append({"part": name, "back_to_back_us": _time_part(call, 0, samples * 10),
                         "after_gap_us": _time_part(call, PART_GAP_S, samples)})
    finally:
        loop.close()
    return rows


def markdown(rows: list[dict[str, Any]], part_rows: list[dict[str, Any]], gaps: list[float]) -> str:
    head = " | ".join(f"{g:g} ms gap" for g in gaps)
    lines = [f"# One request at a time ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             "Median latency, with the target's CPU per request in brackets (ms), by the idle time before "
             "each request; one connection, one worker.", "",
             f"| target | {head} |", "|---|" + "---:|" * len(gaps)]
    for row in rows:
        cells = " | ".join(f"{r['p50_ms']:.3f} ({r['cpu_ms_per_request']:.3f})" for r in row["by_gap"])
        lines.append(f"| {row['name']} | {cells} |")
    lines += ["", f"Parts of the request in this process (µs, median): back to back, and after "
                  f"{PART_GAP_S * 1000:g} ms asleep.", "", "| part | back to back | after the gap |", "|---|---:|---:|"]
    lines += [f"| {p['part']} | {p['back_to_back_us']:.1f} | {p['after_gap_us']:.1f} |" for p in part_rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold", description=__doc__.splitlines()[0])
    parser.add_argument("--gaps", default="0,1,5,20", help="idle milliseconds before each request")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--part-samples", type=int, default=200, help="calls of each part after a gap")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args(argv)
    gaps = [float(g) for g in args.gaps.split(",")]
    names = args.targets.split(",")
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"--targets: unknown {', '.join(unknown)} (known: {', '.join(TARGETS)})")
    token = TokenMinter((REPO / "certs" / "dev-idp-key.pem").read_bytes()).mint("alice", int(time.time()))
    workdir = Path(tempfile.mkdtemp(prefix="iam-cold-"))
    upstream = start_upstream(workdir, REPO / "certs" / "dev-jwks.json")
    ctx = BenchContext(workdir=workdir, upstream=upstream, jwks_file=REPO / "certs" / "dev-jwks.json", iam_workers=1)
    rows = []
    try:
        for name in names:
            running = TARGETS[name](ctx)
            try:
                by_gap = [one_at_a_time(running, token, gap / 1000, args.requests) for gap in gaps]
            finally:
                running.stop()
            rows.append({"name": name, "by_gap": by_gap})
            print(f"{name}: " + ", ".join(f"{r['gap_ms']:g} ms gap {r['p50_ms']:.3f} ms ({r['cpu_ms_per_request']:.3f} CPU)"
                                         for r in by_gap), file=sys.stderr)
    finally:
        upstream.service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    part_rows = parts(token, args.part_samples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cold.json").write_text(json.dumps({"targets": rows, "parts": part_rows, "part_gap_ms": PART_GAP_S * 1000},
                                              indent=2) + "\n")
    (out / "cold.md").write_text(markdown(rows, part_rows, gaps))
    print(f"wrote {out / 'cold.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
