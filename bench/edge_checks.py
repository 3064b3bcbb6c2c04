"""What the edge checks cost per request, next to what a whole request costs the proxy.

Each check is timed in process, on the request the harness sends (`GET /api/invoices/7`, a bearer
token, the usual client headers) plus a few hostile headers, so every rule has work to do:

    header rewrite   spoof list (normalised names), `_`/`.` names, method overrides, credentials and
                     the proxy's cookies, framing headers, byte-for-byte values (forward/headers.py)
    input masking    credential headers, URL-carrying headers, query parameters (redaction.py)
    token times      exp/nbf/iat sanity and the lifetime bound, header parameters (bearer_jwt.py)
    forward-auth     trusted-peer check and request description (forward_auth.py)
    listener         header and body deadlines, head size limits (listener/protocol.py): CPU per
                     request over uvicorn's own protocol, from bench/listener.py

The share is the sum over the CPU time per request the harness measured for iam-proxy (bench/results/
latest.json, `cpu_s_per_1k`), when there is one. Usage:

    .venv/bin/python -m bench.edge_checks [--n 20000] [--json] [--results bench/results/latest.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iam_proxy.authn.bearer_jwt import JWTAuthenticator  # noqa: E402
from iam_proxy.authn.identity import Identity  # noqa: E402
from iam_proxy.context import context_from_scope  # noqa: E402
from iam_proxy.forward.headers import HeaderRewriter, TrustedProxies  # noqa: E402
from iam_proxy.forward_auth import ForwardAuth  # noqa: E402
from iam_proxy.policy.input import build_input  # noqa: E402
from iam_proxy.redaction import mask_input  # noqa: E402
from iam_proxy.routes.matcher import RouteTable  # noqa: E402
from iam_proxy.settings import IdentityHeaders, JWTProvider, Route  # noqa: E402

HEADERS = [(b"host", b"api.example"), (b"authorization", b"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"),
           (b"accept", b"application/json"), (b"user-agent", b"bench/1.0"), (b"accept-encoding", b"gzip"),
           (b"x-request-id", b"7f1c"), (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
           (b"cookie", b"__Host-iam_session=abc; theme=dark"), (b"content-type", b"application/json"),
           # hostile
           (b"x_forwarded_user", b"mallory"), (b"remote-user", b"mallory"), (b"x-http-method-override", b"DELETE")]
ROUTE = Route(id="api", upstream="http://127.0.0.1:9", authenticators=["bearer"])
IDENTITY = Identity(sub="alice", method="jwt", username="alice", email="alice@example.org", groups=("finance",))
PROVIDER = JWTProvider(id="dev", issuer="https://idp", jwks_file="/dev/null", audiences=["api"])


def _scope(headers: list[tuple[bytes, bytes]], path: bytes = b"/api/invoices/7") -> dict[str, Any]:
    return {"type": "http", "method": "GET", "scheme": "http", "path": path.decode(), "raw_path": path,
            "query_string": b"page=2&access_token=secret", "headers": headers, "client": ("127.0.0.1", 5000)}


def checks() -> dict[str, Callable[[], Any]]:
    table = RouteTable([ROUTE])
    rewriter = HeaderRewriter(IdentityHeaders(), TrustedProxies(["10.0.0.0/8"]))
    ctx = context_from_scope(_scope(HEADERS))
    ctx.route = table.match("GET", "api.example", ctx.path)
    ctx.identity = IDENTITY
    policy_input = build_input(ctx)
    forward_auth = ForwardAuth(["127.0.0.1/32"], [], only=False)
    described = _scope(HEADERS + [(b"x-original-uri", b"/api/invoices/7?page=2"), (b"x-original-method", b"GET"),
                                  (b"x-forwarded-for", b"10.1.2.3")], path=b"/.iam/auth")
    now = time.time()
    claims = {"iss": "https://idp", "aud": "api", "sub": "alice", "iat": now, "nbf": now, "exp": now + 600}
    header = {"alg": "RS256", "kid": "k1", "typ": "JWT"}

    def token_times() -> None:
        JWTAuthenticator._check_header(header)
        JWTAuthenticator._check_claims(claims, PROVIDER, now)

    return {
        "header rewrite": lambda: rewriter.upstream_request_headers(ctx, IDENTITY, "a.b.c", extra={"X-Policy": "1"},
                                                                    remove=(), preserve_host=False),
        "input masking": lambda: mask_input(policy_input),
        "token times": token_times,
        "forward-auth describe": lambda: forward_auth.describe(described),
    }


def measure(fn: Callable[[], Any], n: int) -> dict[str, float]:
    for _ in range(min(n, 2000)):
        fn()
    samples = []
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(n // 5):
            fn()
        samples.append((time.perf_counter_ns() - started) / 1000 / (n // 5))
    return {"mean_us": round(statistics.fmean(samples), 2), "min_us": round(min(samples), 2)}


def request_cpu_us(results: Path) -> float | None:
    """CPU time per request of the default iam-proxy target in the harness's last run."""
    if not results.exists():
        return None
    for row in json.loads(results.read_text()):
        if row.get("name") == "iam-proxy" and row.get("cpu_s_per_1k"):
            return float(row["cpu_s_per_1k"]) * 1000  # s per 1000 requests = ms per request
    return None


def run(n: int, results: Path) -> dict[str, Any]:
    from bench.listener import in_process

    rows = {name: measure(fn, n) for name, fn in checks().items()}
    listener = in_process()
    # a reverse-proxied request pays the listener's guards, the rewrite, the masking and the token checks
    proxied = listener["guards_us"] + sum(rows[name]["mean_us"] for name in ("header rewrite", "input masking",
                                                                             "token times"))
    cpu = request_cpu_us(results)
    return {"n": n, "checks": rows, "listener": listener, "proxied_request_us": round(proxied, 2),
            "request_cpu_us": cpu, "share_percent": round(100 * proxied / cpu, 2) if cpu else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="calls per check")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--results", default=str(REPO / "bench" / "results" / "latest.json"))
    parser.add_argument("--out", help="also write the report (JSON) here")
    args = parser.parse_args(argv)
    report = run(args.n, Path(args.results))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'edge check':<24}{'mean µs':>10}{'min µs':>10}   (n={args.n} calls each)")
    for name, row in report["checks"].items():
        print(f"{name:<24}{row['mean_us']:>10}{row['min_us']:>10}")
    listener = report["listener"]
    print(f"{'listener guards':<24}{listener['guards_us']:>10}{'':>10}   (CPU per request over uvicorn's protocol: "
          f"{listener['stock_us']} -> {listener['guarded_us']} µs, medians of {listener['rounds']} rounds)")
    share = report["share_percent"]
    print(f"a proxied request: {report['proxied_request_us']} µs of edge checks"
          + (f", {share} % of the {report['request_cpu_us']:.0f} µs CPU a request costs (harness)" if share else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
