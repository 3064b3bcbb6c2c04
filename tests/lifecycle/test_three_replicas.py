"""Three proxy replicas behind a real nginx, sharing a real redis-server for browser sessions and
rate limits: a session and a limit hold across replicas, and killing a replica loses no audit event
(each replica writes its own audit file)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from peers.nginx import start_nginx
from peers.redis import RedisServer

from iam_proxy.core.identity import Identity
from iam_proxy.session import build_session_manager
from iam_proxy.settings.sessions import SessionSettings
from support import ProxyProcess, free_port

SECRET = "three-replicas-session-secret-0123456789"


@pytest.fixture
def redis_url(tmp_path: Path):
    server = RedisServer(tmp_path)
    yield server.url
    server.stop()


def _replica_config(base: dict, tmp: Path, name: str, redis_url: str) -> dict:
    sessions = {"secret": SECRET, "store": "redis", "redis": {"url": redis_url},
                "cookie_name": "iam_session", "secure": False}
    config = {**base, "listeners": {"proxy": {"host": "127.0.0.1", "port": free_port()},
                                    "admin": {"host": "127.0.0.1", "port": free_port()}},
              "audit": {"sinks": [{"type": "file", "path": str(tmp / f"audit-{name}.jsonl")}]},
              "sessions": sessions,
              "rate_limits": {"store": "redis", "redis": {"url": redis_url},
                              "limits": [{"id": "per-user", "key": "identity", "requests": 6, "per_seconds": 60,
                                          "routes": ["api"]}]}}
    config["identity_providers"] = [{**base["identity_providers"][0],
                                     "client": {"client_id": "iam-proxy", "client_secret": "x"}}]
    config["authenticators"] = {**base["authenticators"], "browser": {"type": "oidc_session", "providers": ["dev"]}}
    config["routes"] = [*base["routes"], {"id": "app", "match": {"path": "/app/**"}, "upstream": base["routes"][0]["upstream"],
                                          "authenticators": ["browser"], "policy": {"path": "iam/authz/decision"},
                                          "labels": {"access": "public"}}]
    return config


@pytest.fixture
def cluster(proxy_config, tmp_path, redis_url):
    replicas = [ProxyProcess(_replica_config(proxy_config, tmp_path, name, redis_url), tmp_path, f"replica-{name}")
                for name in "abc"]
    for replica in replicas:
        replica.wait_ready()
    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{r.port} max_fails=1 fail_timeout=30s;" for r in replicas)
    nginx = start_nginx(tmp_path / "nginx", f"""
    upstream replicas {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replicas;
            proxy_set_header X-Request-Id $http_x_request_id;
            proxy_next_upstream error timeout;
        }}
    }}""", [port])
    yield f"http://127.0.0.1:{port}", replicas
    nginx.stop()
    for replica in replicas:
        replica.stop()


def _served_by(replicas, request_ids: set[str]) -> Counter:
    """Which replica's audit file holds each request's event."""
    return Counter(r.process.argv[-1] for r in replicas for e in r.audit_events() if e["request_id"] in request_ids)


def _until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _session_cookie(redis_url: str) -> str:
    """A session made as a sign-in at any replica would make it: in the shared Redis store."""
    async def create() -> str:
        manager = build_session_manager(SessionSettings(secret=SECRET, store="redis", redis={"url": redis_url},
                                                        cookie_name="iam_session", secure=False))
        identity = Identity(sub="carol", method="oidc", username="carol", groups=("finance",), provider="dev")
        _, cookie = await manager.create(identity=identity, provider="dev", protocol="oidc")
        await manager.close()
        return cookie.split(";", 1)[0].split("=", 1)[1]
    return asyncio.run(create())


def test_a_session_and_a_rate_limit_hold_across_three_replicas(cluster, issuer, redis_url):
    url, replicas = cluster
    with httpx.Client(base_url=url, timeout=10) as browser:
        assert browser.get("/app/home").status_code in (302, 303, 401)  # no session: sign in first
        browser.cookies.set("iam_session", _session_cookie(redis_url))
        ids = {f"s{i}" for i in range(6)}
        answers = [browser.get("/app/home", headers={"X-Request-Id": rid}) for rid in sorted(ids)]
    assert [a.status_code for a in answers] == [200] * 6
    for replica in replicas:
        replica.wait_audit(1)
    time.sleep(0.5)
    by_replica = _served_by(replicas, ids)
    assert len(by_replica) == 3 and sum(by_replica.values()) == 6, by_replica  # every replica knew the session

    token = {"Authorization": f"Bearer {issuer.token('alice', ['finance'])}"}
    limited = [httpx.get(f"{url}/api/invoices/1", headers={**token, "X-Request-Id": f"r{i}"}) for i in range(9)]
    assert [a.status_code for a in limited] == [200] * 6 + [429] * 3  # one limit of 6, not 6 per replica
    time.sleep(0.5)
    assert len(_served_by(replicas, {f"r{i}" for i in range(6)})) == 3


def test_killing_a_replica_loses_no_audit_event(cluster, issuer):
    url, replicas = cluster
    answered: list[str] = []
    failed: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            request_id = uuid.uuid4().hex
            try:
                response = httpx.get(f"{url}/public/x?_sleep=0.02", headers={"X-Request-Id": request_id}, timeout=10)
                (answered if response.status_code == 200 else failed).append(request_id)
            except httpx.HTTPError:
                failed.append(request_id)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    _until(lambda: len(answered) >= 20)
    os.kill(replicas[1].process.pid, signal.SIGKILL)
    before = len(answered)
    _until(lambda: len(answered) >= before + 20)  # served by the two others
    stop.set()
    for thread in threads:
        thread.join(15)
    assert replicas[1].process.proc.wait(5) == -signal.SIGKILL
    assert not failed, failed[:3]  # nginx moved on to the others
    deadline = time.monotonic() + 10
    missing = set(answered)
    while missing and time.monotonic() < deadline:
        missing -= {e["request_id"] for r in replicas for e in r.audit_events()}
        time.sleep(0.2)
    assert not missing, f"{len(missing)} answered requests have no audit event"
    assert _served_by(replicas[1:2], set(answered))  # the killed replica had answered some itself
