"""Shared test helpers: free ports, real processes (proxy, upstream, peers), dev keys and tokens.

Every server a test starts listens on 127.0.0.1 on a free port, so tests never collide with each
other or with `make run`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import yaml
from joserfc import jwt
from joserfc.jwk import RSAKey

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DEV_ISSUER = "https://dev-idp.iam-proxy.localhost"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, and never one handed out before in this test process: the
    kernel can give the same free port to two calls in a row (a proxy's listener and admin port once
    got the same one, and the proxy refused to start)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


class Process:
    """A child process with its output in a log file; stop() is idempotent."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path = REPO) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
                                     env={**os.environ, **(env or {})}, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def start_upstream(tmp: Path) -> tuple[Process, str]:
    port = free_port()
    proc = Process([PYTHON, str(REPO / "examples" / "echo_upstream.py"), "--port", str(port)],
                   tmp / f"upstream-{port}.log")
    wait_for_port(port, proc.proc)
    return proc, f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- keys and tokens


class DevIssuer:
    """An RSA signing key with a JWKS, as an identity provider would have."""

    def __init__(self, directory: Path, kid: str = "k1", issuer: str = DEV_ISSUER) -> None:
        self.directory = directory
        self.issuer = issuer
        directory.mkdir(parents=True, exist_ok=True)
        self.keys: dict[str, RSAKey] = {}
        self.jwks_path = directory / "jwks.json"
        self.add_key(kid)

    def add_key(self, kid: str) -> None:
        self.keys[kid] = RSAKey.generate_key(2048, private=True)
        self.write_jwks()

    def remove_key(self, kid: str) -> None:
        del self.keys[kid]
        self.write_jwks()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**k.as_dict(private=False), "kid": kid, "alg": "RS256", "use": "sig"}
                         for kid, k in self.keys.items()]}

    def write_jwks(self) -> None:
        tmp = self.jwks_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.jwks()))
        tmp.replace(self.jwks_path)

    def token(self, sub: str = "alice", groups: list[str] | None = None, *, kid: str | None = None,
              ttl: int = 3600, aud: str | list[str] = "iam-proxy", alg: str = "RS256", **claims: Any) -> str:
        kid = kid or next(iter(self.keys))
        now = int(time.time())
        body = {"iss": self.issuer, "aud": aud, "sub": sub, "iat": now, "nbf": now, "exp": now + ttl,
                "jti": uuid.uuid4().hex, "groups": groups or [], "preferred_username": sub,
                "email": f"{sub}@example.org", **claims}
        return jwt.encode({"alg": alg, "kid": kid, "typ": "JWT"}, body, self.keys[kid])


# ---------------------------------------------------------------- the proxy as a real process


def base_config(upstream: str, jwks_path: Path, audit_path: Path, policy_dir: Path,
                issuer: str = DEV_ISSUER) -> dict[str, Any]:
    return {
        "listeners": {"proxy": {"host": "127.0.0.1", "port": free_port()},
                      "admin": {"host": "127.0.0.1", "port": free_port()}},
        "identity_providers": [{"id": "dev", "issuer": issuer, "jwks_file": str(jwks_path),
                                "audiences": ["iam-proxy"], "algorithms": ["RS256"], "leeway_seconds": 5,
                                "jwks_min_refetch_seconds": 0}],
        "authenticators": {"bearer": {"type": "jwt", "providers": ["dev"]}, "public": {"type": "anonymous"}},
        "routes": [
            {"id": "api", "match": {"path": "/api/**"}, "upstream": upstream, "authenticators": ["bearer"],
             "policy": {"path": "iam/authz/decision"}, "timeout_seconds": 2},
            {"id": "public", "match": {"path": "/public/**"}, "upstream": upstream,
             "authenticators": ["bearer", "public"], "policy": {"path": "iam/authz/decision"},
             "labels": {"access": "public"}},
        ],
        "policy": {"dir": str(policy_dir), "reload_interval_seconds": 0.2},
        "audit": {"sinks": [{"type": "file", "path": str(audit_path)}]},
    }


class ProxyProcess:
    def __init__(self, config: dict[str, Any], tmp: Path, name: str = "proxy",
                 env: dict[str, str] | None = None, cwd: Path = REPO) -> None:
        self.config = config
        self.config_path = tmp / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.port = config["listeners"]["proxy"]["port"]
        self.admin_port = config["listeners"]["admin"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        sinks = config.get("audit", {}).get("sinks", [])
        self.audit_path = Path(sinks[0]["path"]) if sinks and sinks[0].get("type") == "file" else None
        self.process = Process([PYTHON, "-m", "iam_proxy", "run", "--config", str(self.config_path)],
                               tmp / f"{name}.log", env=env, cwd=cwd)

    def wait_ready(self, timeout: float = 20.0) -> "ProxyProcess":
        wait_for_port(self.admin_port, self.process.proc, timeout)
        wait_for_port(self.port, self.process.proc, timeout)
        return self

    def audit_files(self) -> list[Path]:
        """The audit file of each worker: `audit.jsonl`, `audit.w1.jsonl`, ... (audit/journal.py)."""
        if self.audit_path is None:
            return []
        path = self.audit_path
        workers = sorted(path.parent.glob(f"{path.stem}.w[0-9]*{path.suffix}"))
        return [p for p in (path, *workers) if p.exists()]

    def audit_events(self) -> list[dict[str, Any]]:
        events = []
        for path in self.audit_files():
            # only complete lines: the proxy may be appending the next event right now
            text = path.read_text()
            events += [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]
        return events

    def wait_audit(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The audit events once at least `count` are written (events land after the response)."""
        deadline = time.monotonic() + timeout
        events = self.audit_events()
        while len(events) < count and time.monotonic() < deadline:
            time.sleep(0.05)
            events = self.audit_events()
        return events

    def metric(self, name: str, labels: str = "") -> float:
        """A sample from the admin /metrics: the series of `name` carrying every `k="v"` of the
        comma-separated `labels` (0 when there is none yet)."""
        wanted = [part for part in labels.split(",") if part]
        for line in httpx.get(f"{self.admin_url}/metrics").text.splitlines():
            if line.startswith((f"{name}{{", f"{name} ")) and all(part in line for part in wanted):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 10), **kw)

    def stop(self) -> int | None:
        return self.process.stop()


# ---------------------------------------------------------------- the real OPA server


def opa_binary() -> str:
    """The pinned OPA that scripts/install-peers.sh builds; a missing binary fails the test."""
    path = Path(os.environ.get("IAM_PROXY_OPA") or Path.home() / ".cache" / "iam-proxy" / "bin" / "opa")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"OPA not found at {path}: run scripts/install-peers.sh (make peers)")
    return str(path)


class OpaServer:
    """`opa run --server` on a loopback port, loading `paths`; restartable on the same port."""

    def __init__(self, paths: list[Path], tmp: Path, name: str = "opa", extra: list[str] | None = None) -> None:
        self.paths = paths
        self.tmp = tmp
        self.name = name
        self.extra = extra or []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Process | None = None
        self.start()

    def start(self) -> "OpaServer":
        argv = [opa_binary(), "run", "--server", "--skip-version-check", "--addr", f"127.0.0.1:{self.port}",
                "--log-level", "error", *self.extra, *map(str, self.paths)]
        self.process = Process(argv, self.tmp / f"{self.name}-{self.port}.log")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.proc.poll() is not None:
                raise RuntimeError(f"opa exited {self.process.proc.returncode}: {self.process.logs()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"OPA not healthy on {self.url}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.stop(sig)


def copy_policies(target: Path, extra: dict[str, str] | None = None) -> Path:
    """A private copy of the shipped policies (so a test may edit them), plus `extra` files by relative path."""
    shutil.copytree(REPO / "policies", target)
    for relative, text in (extra or {}).items():
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        (target / relative).write_text(text)
    return target


def start_ws_upstream(directory: Path) -> tuple["Process", int]:
    """The websocket upstream of tests/e2e/ws_upstream.py on a free port (log in `directory`)."""
    port = free_port()
    process = Process([PYTHON, str(REPO / "tests" / "e2e" / "ws_upstream.py"), "--port", str(port)],
                      directory / "upstream.log")
    wait_for_port(port, process.proc)
    return process, port


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.05) -> Any:
    """The first truthy value of `condition()`, asked every `interval` seconds; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def audit_event(proxy: ProxyProcess, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The audit event of one request (sent with X-Request-Id); events land as its answer completes."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in proxy.audit_events() if e.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            assert found, f"no audit event for request {request_id}"
            return found[-1]
        time.sleep(0.05)


def upstream_headers(response: httpx.Response) -> dict[str, str]:
    """The headers the echo upstream received, lower-cased."""
    return {k.lower(): v for k, v in response.json()["headers"].items()}


def run_cli(*args: str, timeout: float = 60, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "iam_proxy", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def add_policy_route(config: dict[str, Any], policy_dir: Path, package: str, rego: str,
                     **policy: Any) -> None:
    """A module `<package>.rego` in the policy directory and a route `/<package>/**` deciding with its
    `allow` rule (like the first route otherwise; `policy` adds keys such as cache or engine)."""
    (policy_dir / f"{package}.rego").write_text(f"package {package}\n\n{rego}\n")
    routes = config["routes"]
    routes.append({**routes[0], "id": package, "match": {"path": f"/{package}/**"},
                   "policy": {"path": f"{package}/allow", **policy}})
