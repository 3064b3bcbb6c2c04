"""The systems under test, each started as real processes on free loopback ports.

All of them forward to one nginx upstream that answers a small JSON document, and all of them see
the same bearer token. nginx runs as our own instance (`-p prefix -c conf`), never the system one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import yaml
from joserfc.jwk import OKPKey

from iam_proxy.devcerts import DEV_AUDIENCE, DEV_ISSUER
from iam_proxy.settings.policy import PolicySettings

from .tokens import TOKEN_TTL_SECONDS

REPO = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("IAM_PROXY_TOOLS", Path.home() / ".cache" / "iam-proxy"))
REQUEST_PATH = "/api/invoices/1"  # allowed for the `finance` group by the shipped policies
UPSTREAM_BODY = '{"id":1,"status":"paid","amount":"120.00","currency":"EUR","customer":"ACME"}'
# nginx caches a 200 from the forward-auth endpoint this long (see docs/performance.md: revocation)
FORWARD_AUTH_CACHE_SECONDS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


def wait_for_ready(admin_port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until iam-proxy's /readyz is 200: every worker has started, with its ext_authz listeners
    (a check service's long-lived connections stay with the workers that were up when they opened)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1):
                return
        except OSError:  # URLError and HTTPError (503 while not ready) are OSErrors
            time.sleep(0.1)
    raise TimeoutError(f"/readyz on port {admin_port} not 200 after {timeout}s")


class Service:
    """One child process (its own session, output to a log file); stop() is idempotent."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
                                     env={**os.environ, **(env or {})}, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


# ---------------------------------------------------------------- nginx


NGINX_MAIN = """
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  keepalive_requests 1000000;
  {http}
}}
"""

UPSTREAM_HTTP = """
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location = /jwks.json {{ default_type application/json; alias {jwks}; }}
    location / {{ default_type application/json; return 200 '{body}'; }}
  }}
"""

PROXY_HTTP = """
  upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
"""

# nginx in front, asking iam-proxy at /.iam/auth, copying the identity headers it returns. With
# `cache_seconds`, a 200 is cached per (credential, method, URI) for that long: a revoked token or
# changed policy keeps working for at most that long (docs/performance.md).
FORWARD_AUTH_HTTP = """
  upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
  upstream iam {{ server 127.0.0.1:{iam_port}; keepalive 128; }}
  {cache_path}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{
      auth_request /_iam_auth;
      auth_request_set $iam_user $upstream_http_x_forwarded_user;
      auth_request_set $iam_email $upstream_http_x_forwarded_email;
      auth_request_set $iam_groups $upstream_http_x_forwarded_groups;
      auth_request_set $iam_username $upstream_http_x_forwarded_preferred_username;
      auth_request_set $iam_assertion $upstream_http_x_iam_assertion;
      proxy_set_header X-Forwarded-User $iam_user;
      proxy_set_header X-Forwarded-Email $iam_email;
      proxy_set_header X-Forwarded-Groups $iam_groups;
      proxy_set_header X-Forwarded-Preferred-Username $iam_username;
      proxy_set_header X-Iam-Assertion $iam_assertion;
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
    location = /_iam_auth {{
      internal;
      proxy_pass http://iam/.iam/auth;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      {cache}
    }}
  }}
"""

FORWARD_AUTH_CACHE = """
      proxy_cache iam_auth;
      proxy_cache_key "$host|$request_method|$request_uri|$http_authorization|$http_cookie|$http_x_api_key|$ssl_client_escaped_cert";
      proxy_cache_valid 200 {seconds}s;
      proxy_cache_valid any 0;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      proxy_cache_lock on;
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx is not installed (scripts/install-peers.sh installs it)")
    return found


def start_nginx(name: str, workdir: Path, http: str, port: int, workers: int | str) -> Service:
    prefix = workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_MAIN.format(workers=workers, prefix=prefix, http=http))
    service = Service(name, [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                      workdir)
    wait_for_port(port, service.proc)
    return service


# ---------------------------------------------------------------- the shared upstream


@dataclass
class Upstream:
    service: Service
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks.json"


def start_upstream(workdir: Path, jwks_file: Path) -> Upstream:
    port = free_port()
    http = UPSTREAM_HTTP.format(port=port, jwks=jwks_file.resolve(), body=UPSTREAM_BODY)
    return Upstream(start_nginx("upstream", workdir, http, port, workers=1), port)


# ---------------------------------------------------------------- targets


@dataclass
class Running:
    """A started target: where to send load, and whose CPU and memory count as the proxy's."""

    url: str
    proxy_pids: list[int]
    services: list[Service] = field(default_factory=list)
    notes: str = ""
    # the load carries this many distinct tokens in turn (the harness's token mix) instead of one
    token_mix: bool = False

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


@dataclass
class BenchContext:
    workdir: Path
    upstream: Upstream
    jwks_file: Path
    iam_workers: int = 1
    nginx_workers: int | str = "auto"
    assertion_reuse_seconds: int = 0  # the product default: one assertion per request
    assertion_algorithm: str = "ES256"  # the product default


def _assertion_key(ctx: BenchContext) -> Path:
    if ctx.assertion_algorithm == "ES256":
        return REPO / "certs" / "assertion-key.pem"
    path = ctx.workdir / "assertion-ed25519.pem"
    if not path.exists():
        path.write_bytes(OKPKey.generate_key("Ed25519", private=True).as_pem(private=True))
    return path


def _iam_config(ctx: BenchContext, name: str, policy: dict[str, Any],
                cache_decisions: bool | None = None, extra: dict[str, Any] | None = None) -> tuple[Path, int, int]:
    port, admin = free_port(), free_port()
    listeners: dict[str, Any] = {"proxy": {"host": "127.0.0.1", "port": port},
                                 "admin": {"host": "127.0.0.1", "port": admin}}
    if ctx.iam_workers > 1:
        listeners["workers"] = ctx.iam_workers
    config = {
        "listeners": listeners,
        "identity_providers": [{"id": "dev", "issuer": DEV_ISSUER, "jwks_file": str(ctx.jwks_file.resolve()),
                                "audiences": [DEV_AUDIENCE], "algorithms": ["RS256"],
                                # the bench's tokens are minted once a week (bench/tokens.py)
                                "max_token_lifetime_seconds": TOKEN_TTL_SECONDS}],
        "authenticators": {"bearer": {"type": "jwt", "providers": ["dev"]}},
        "routes": [{"id": "api", "match": {"path": "/api/**"}, "upstream": ctx.upstream.url,
                    "authenticators": ["bearer"],
                    "policy": {"path": "iam/authz/decision",
                               # None: the product default (on for the in-process engines, off for opa)
                               **({} if cache_decisions is None else {"cache": cache_decisions})}}],
        "policy": policy,
        "identity_headers": {"assertion": {"key_file": str(_assertion_key(ctx)), "algorithm": ctx.assertion_algorithm,
                                           "reuse_seconds": ctx.assertion_reuse_seconds}},
        "audit": {"sinks": [{"type": "file", "path": str(ctx.workdir / f"{name}-audit.jsonl")}]},
        # nginx (forward-auth targets) asks /.iam/auth from loopback
        "forward_auth": {"trusted_peers": ["127.0.0.1/32"]},
        **(extra or {}),
    }
    path = ctx.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port, admin


def _start_iam(ctx: BenchContext, name: str, policy: dict[str, Any],
               cache_decisions: bool | None = None, extra: dict[str, Any] | None = None) -> tuple[Service, int]:
    config, port, admin = _iam_config(ctx, name, policy, cache_decisions, extra)
    python = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else "python3"
    service = Service(name, [python, "-m", "iam_proxy", "--log-level", "WARNING", "run", "--config", str(config)],
                      ctx.workdir)
    try:
        wait_for_port(admin, service.proc)
        wait_for_port(port, service.proc)
        wait_for_ready(admin, service.proc)
    except (RuntimeError, TimeoutError) as exc:
        tail = service.log_tail()
        service.stop()
        raise RuntimeError(f"{name} did not start: {exc}\n{tail}") from None
    return service, port


def _in_process_policy(engine: str = "auto") -> dict[str, Any]:
    """The shipped policies on an in-process engine: the product default (auto: opa-lib, which `make
    bench` builds), or rego-cpp (`embedded`) for the variant rows."""
    return {"engine": engine, "dir": str(REPO / "policies")}


def start_upstream_direct(ctx: BenchContext) -> Running:
    return Running(ctx.upstream.url, [ctx.upstream.service.pid], notes="nginx return 200, 1 worker")


def start_nginx_proxy(ctx: BenchContext) -> Running:
    port = free_port()
    http = PROXY_HTTP.format(port=port, upstream_port=ctx.upstream.port)
    nginx = start_nginx("nginx-proxy", ctx.workdir, http, port, ctx.nginx_workers)
    return Running(f"http://127.0.0.1:{port}", [nginx.pid], [nginx],
                   notes=f"worker_processes {ctx.nginx_workers}, upstream keepalive")


def start_iam_proxy(ctx: BenchContext) -> Running:
    service, port = _start_iam(ctx, "iam-proxy", _in_process_policy())
    return Running(f"http://127.0.0.1:{port}", [service.pid], [service],
                   notes=f"engine auto = {PolicySettings().default_engine} (decision cache on, the default), audit to file, "
                         f"{ctx.iam_workers} worker(s)")


def start_iam_proxy_nocache(ctx: BenchContext) -> Running:
    service, port = _start_iam(ctx, "iam-proxy-nocache", _in_process_policy(), cache_decisions=False)
    return Running(f"http://127.0.0.1:{port}", [service.pid], [service],
                   notes=f"as iam-proxy, decision cache off: the engine evaluates every request, "
                         f"{ctx.iam_workers} worker(s)")


def start_iam_proxy_embedded_nocache(ctx: BenchContext) -> Running:
    service, port = _start_iam(ctx, "iam-proxy-embedded-nocache", _in_process_policy("embedded"), cache_decisions=False)
    return Running(f"http://127.0.0.1:{port}", [service.pid], [service],
                   notes=f"engine embedded (rego-cpp in process), decision cache off, "
                         f"{ctx.iam_workers} worker(s)")


def start_iam_proxy_embedded(ctx: BenchContext) -> Running:
    service, port = _start_iam(ctx, "iam-proxy-embedded", _in_process_policy("embedded"))
    return Running(f"http://127.0.0.1:{port}", [service.pid], [service],
                   notes=f"engine embedded (rego-cpp), decision cache on, {ctx.iam_workers} worker(s)")


def opa_binary() -> Path:
    path = TOOLS / "bin" / "opa"
    if not path.exists():
        raise RuntimeError(f"{path} is missing (scripts/install-peers.sh builds it)")
    return path


def start_iam_proxy_opa(ctx: BenchContext) -> Running:
    opa_port = free_port()
    opa = Service("opa", [str(opa_binary()), "run", "--server", "--addr", f"127.0.0.1:{opa_port}",
                          "--log-level", "error", str(REPO / "policies")], ctx.workdir)
    wait_for_port(opa_port, opa.proc)
    try:
        service, port = _start_iam(ctx, "iam-proxy-opa", {
            "engine": "opa", "dir": str(REPO / "policies"),
            "opa": {"url": f"http://127.0.0.1:{opa_port}"},
        })
    except RuntimeError:
        opa.stop()
        raise
    # OPA is a dependency here, not the proxy: only iam-proxy's CPU and memory count.
    return Running(f"http://127.0.0.1:{port}", [service.pid], [opa, service],
                   notes=f"OPA {_pinned('OPA_VERSION')} server over REST, {ctx.iam_workers} worker(s)")


def _start_forward_auth(ctx: BenchContext, name: str, cache_seconds: int) -> Running:
    iam, iam_port = _start_iam(ctx, f"{name}-iam", _in_process_policy())
    port = free_port()
    cache_path = cache = ""
    if cache_seconds:
        cache_dir = ctx.workdir / name / "auth-cache"
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache_dir.chmod(0o777)  # nginx workers run as another user when the master is root
        cache_path = f"proxy_cache_path {cache_dir} levels=1:2 keys_zone=iam_auth:10m max_size=64m inactive=60s;"
        cache = FORWARD_AUTH_CACHE.format(seconds=cache_seconds)
    http = FORWARD_AUTH_HTTP.format(port=port, upstream_port=ctx.upstream.port, iam_port=iam_port,
                                    cache_path=cache_path, cache=cache)
    try:
        nginx = start_nginx(name, ctx.workdir, http, port, ctx.nginx_workers)
    except Exception:
        iam.stop()
        raise
    note = f"nginx auth_request; 200s cached {cache_seconds}s per token+request line" if cache_seconds \
        else "nginx auth_request, no auth cache"
    return Running(f"http://127.0.0.1:{port}", [nginx.pid, iam.pid], [iam, nginx], notes=note)


def start_forward_auth(ctx: BenchContext) -> Running:
    return _start_forward_auth(ctx, "iam-proxy-forward-auth", FORWARD_AUTH_CACHE_SECONDS)


def start_forward_auth_nocache(ctx: BenchContext) -> Running:
    return _start_forward_auth(ctx, "iam-proxy-forward-auth-nocache", 0)


def oauth2_proxy_binary() -> Path:
    version = _pinned("OAUTH2_PROXY_VERSION")
    path = TOOLS / f"oauth2-proxy-{version}" / "oauth2-proxy"
    if not path.exists():
        raise RuntimeError(f"{path} is missing (scripts/bench.sh builds it with go install)")
    return path


def _pinned(name: str) -> str:
    for line in (REPO / "scripts" / "versions.env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.strip()
    raise RuntimeError(f"scripts/versions.env does not pin {name}")


def start_oauth2_proxy(ctx: BenchContext) -> Running:
    port = free_port()
    argv = [
        str(oauth2_proxy_binary()), f"--http-address=127.0.0.1:{port}", f"--upstream={ctx.upstream.url}/",
        "--provider=oidc", f"--oidc-issuer-url={DEV_ISSUER}", "--skip-oidc-discovery",
        f"--oidc-jwks-url={ctx.upstream.jwks_url}", f"--login-url={DEV_ISSUER}/authorize",
        f"--redeem-url={DEV_ISSUER}/token", f"--client-id={DEV_AUDIENCE}", "--client-secret=bench-only-secret",
        "--cookie-secret=0123456789abcdef0123456789abcdef", "--email-domain=*", "--skip-jwt-bearer-tokens",
        "--bearer-token-login-fallback=false", "--skip-provider-button",
        # One log line per request, like iam-proxy's audit event, written to a file.
        f"--logging-filename={ctx.workdir / 'oauth2-proxy-requests.log'}", "--auth-logging=false",
        "--standard-logging=false",
    ]
    service = Service("oauth2-proxy", argv, ctx.workdir)
    try:
        wait_for_port(port, service.proc)
    except (RuntimeError, TimeoutError) as exc:
        tail = service.log_tail()
        service.stop()
        raise RuntimeError(f"oauth2-proxy did not start: {exc}\n{tail}") from None
    return Running(f"http://127.0.0.1:{port}", [service.pid], [service],
                   notes=f"oauth2-proxy {_pinned('OAUTH2_PROXY_VERSION')}, "
                         "--skip-jwt-bearer-tokens, request log to file")


def start_envoy_ext_authz_grpc(ctx: BenchContext) -> Running:
    from .envoy_front import start_envoy_ext_authz

    return start_envoy_ext_authz(ctx, "grpc")


def start_envoy_ext_authz_http(ctx: BenchContext) -> Running:
    from .envoy_front import start_envoy_ext_authz

    return start_envoy_ext_authz(ctx, "http")


# The token-mix targets: every request carries the next of N distinct valid tokens (10,000 by
# default, `--token-mix`), as real traffic from many callers does; the decision cache sees the hit
# rate that mix gives it, and a token is verified once per worker the first time it is seen.


def _mixed(running: Running, note: str) -> Running:
    running.token_mix = True
    running.notes = f"{running.notes}; {note}"
    return running


def start_iam_proxy_mix(ctx: BenchContext) -> Running:
    return _mixed(start_iam_proxy(ctx), "token mix")


def start_iam_proxy_mix_nocache(ctx: BenchContext) -> Running:
    return _mixed(start_iam_proxy_nocache(ctx), "token mix")


def start_iam_proxy_mix_nocache_1worker(ctx: BenchContext) -> Running:
    return _mixed(start_iam_proxy_nocache(replace(ctx, iam_workers=1)), "token mix, 1 worker")


def start_oauth2_proxy_mix(ctx: BenchContext) -> Running:
    return _mixed(start_oauth2_proxy(ctx), "token mix")


def start_iam_proxy_embedded_mix(ctx: BenchContext) -> Running:
    return _mixed(start_iam_proxy_embedded(ctx), "token mix")


def start_iam_proxy_embedded_mix_nocache(ctx: BenchContext) -> Running:
    return _mixed(start_iam_proxy_embedded_nocache(ctx), "token mix")


def start_iam_proxy_embedded_mix_nocache_1worker(ctx: BenchContext) -> Running:
    return _mixed(start_iam_proxy_embedded_nocache(replace(ctx, iam_workers=1)), "token mix, 1 worker")


# Variants of the assertion's settings (neither is the default): with `reuse_seconds`, an identity's
# assertion is signed once per window instead of once per request; with `algorithm: Ed25519`, each
# signature is an Ed25519 one instead of ECDSA P-256.
ASSERTION_REUSE_SECONDS = 10


def _assertion_variant(start: Callable[[BenchContext], Running], note: str,
                       **changes: Any) -> Callable[[BenchContext], Running]:
    def start_variant(ctx: BenchContext) -> Running:
        running = start(replace(ctx, **changes))
        running.notes = f"{running.notes}; {note}"
        return running
    return start_variant


def _reusing(start: Callable[[BenchContext], Running]) -> Callable[[BenchContext], Running]:
    return _assertion_variant(start, f"assertion reused {ASSERTION_REUSE_SECONDS} s",
                              assertion_reuse_seconds=ASSERTION_REUSE_SECONDS)


def _ed25519(start: Callable[[BenchContext], Running]) -> Callable[[BenchContext], Running]:
    return _assertion_variant(start, "assertion signed with Ed25519", assertion_algorithm="Ed25519")


start_iam_proxy_reuse = _reusing(start_iam_proxy)
start_iam_proxy_mix_reuse = _reusing(start_iam_proxy_mix)
start_forward_auth_nocache_reuse = _reusing(start_forward_auth_nocache)
start_iam_proxy_ed25519 = _ed25519(start_iam_proxy)
start_iam_proxy_mix_nocache_ed25519 = _ed25519(start_iam_proxy_mix_nocache)
start_forward_auth_nocache_ed25519 = _ed25519(start_forward_auth_nocache)


TARGETS = {
    "upstream-direct": start_upstream_direct,
    "nginx-proxy": start_nginx_proxy,
    "iam-proxy": start_iam_proxy,
    "iam-proxy-nocache": start_iam_proxy_nocache,
    "iam-proxy-opa": start_iam_proxy_opa,
    "iam-proxy-forward-auth": start_forward_auth,
    "iam-proxy-forward-auth-nocache": start_forward_auth_nocache,
    "oauth2-proxy": start_oauth2_proxy,
    "envoy-ext-authz-grpc": start_envoy_ext_authz_grpc,
    "envoy-ext-authz-http": start_envoy_ext_authz_http,
    "iam-proxy-mix": start_iam_proxy_mix,
    "iam-proxy-mix-nocache": start_iam_proxy_mix_nocache,
    "iam-proxy-mix-nocache-1worker": start_iam_proxy_mix_nocache_1worker,
    "oauth2-proxy-mix": start_oauth2_proxy_mix,
    "iam-proxy-embedded-mix": start_iam_proxy_embedded_mix,
    "iam-proxy-embedded-mix-nocache": start_iam_proxy_embedded_mix_nocache,
    "iam-proxy-embedded-mix-nocache-1worker": start_iam_proxy_embedded_mix_nocache_1worker,
    "iam-proxy-reuse": start_iam_proxy_reuse,
    "iam-proxy-mix-reuse": start_iam_proxy_mix_reuse,
    "iam-proxy-forward-auth-nocache-reuse": start_forward_auth_nocache_reuse,
    "iam-proxy-ed25519": start_iam_proxy_ed25519,
    "iam-proxy-mix-nocache-ed25519": start_iam_proxy_mix_nocache_ed25519,
    "iam-proxy-forward-auth-nocache-ed25519": start_forward_auth_nocache_ed25519,
}
MIX_TARGETS = {start_iam_proxy_mix, start_iam_proxy_mix_nocache, start_iam_proxy_mix_nocache_1worker,
               start_oauth2_proxy_mix, start_iam_proxy_embedded_mix, start_iam_proxy_embedded_mix_nocache,
               start_iam_proxy_embedded_mix_nocache_1worker, start_iam_proxy_mix_reuse,
               start_iam_proxy_mix_nocache_ed25519}
# Memory is read after these have verified many distinct tokens (the others share iam-proxy's code
# path, and each pass costs one signature verification per token).
DISTINCT_TOKEN_TARGETS = {"iam-proxy", "oauth2-proxy"}
