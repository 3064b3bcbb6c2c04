"""Websockets through the real proxy process to a real websocket upstream (tests/e2e/ws_upstream.py):
authorised at the upgrade (the policy sees the upgrade), proxied both ways with back-pressure, closed
with 1008 when the token expires or the API key is revoked, and audited at the upgrade and the close."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from snippets import snippet
from support import DevIssuer, ProxyProcess, base_config, copy_policies, start_ws_upstream

from iam_proxy.authn.apikey import create_key, revoke_key

PEPPER = "ws-pepper-0123456789abcdef0123"
# upgrades only, and only for finance: a plain GET to the same route is refused
WS_POLICY = """package wstest

import rego.v1

default decision := {"allowed": false, "http_status": 403, "body": "no websocket for you"}

decision := {"allowed": true} if {
	lower(object.get(input.attributes.request.http.headers, "upgrade", "")) == "websocket"
	"finance" in object.get(input.identity, "groups", [])
}

decision := {"allowed": true} if {
	lower(object.get(input.attributes.request.http.headers, "upgrade", "")) == "websocket"
	input.identity.method == "apikey"
}
"""


@pytest.fixture(scope="module")
def ws_upstream(tmp_path_factory):
    process, port = start_ws_upstream(tmp_path_factory.mktemp("ws-upstream"))
    yield f"http://127.0.0.1:{port}"
    process.stop()


@pytest.fixture(scope="module")
def iam(ws_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ws-iam")
    issuer = DevIssuer(tmp / "issuer")
    policies = copy_policies(tmp / "policies", {"wstest/wstest.rego": WS_POLICY,
                                                "example/example.rego": snippet("config-websocket-policy").text})
    key_file = tmp / "keys.yaml"
    create_key(key_file, PEPPER, "placeholder", [], None)
    config = base_config(ws_upstream, issuer.jwks_path, tmp / "audit.jsonl", policies)
    config["identity_providers"][0]["leeway_seconds"] = 0
    config["authenticators"]["keys"] = {"type": "apikey", "file": str(key_file), "pepper": "${WS_APIKEY_PEPPER}",
                                        "reload_interval_seconds": 0.2}
    config["routes"] += [
        {"id": "ws", "match": {"path": "/ws/**"}, "upstream": ws_upstream, "authenticators": ["bearer"],
         "policy": {"path": "wstest/decision"}},
        {"id": "ws-keys", "match": {"path": "/keys/**"}, "upstream": ws_upstream, "strip_prefix": "/keys",
         "authenticators": ["keys"], "policy": {"path": "wstest/decision"}},
        {"id": "streams", "match": {"path": "/streams/**"}, "upstream": ws_upstream, "strip_prefix": "/streams",
         "authenticators": ["bearer"], "policy": {"path": "example/decision"}},
    ]
    config["websockets"] = {"recheck_seconds": 0.5}
    proxy = ProxyProcess(config, tmp, env={"WS_APIKEY_PEPPER": PEPPER}).wait_ready()
    proxy.issuer, proxy.key_file = issuer, key_file
    yield proxy
    proxy.stop()


def _url(iam, path: str) -> str:
    return f"ws://127.0.0.1:{iam.port}{path}"


def _bearer(iam, sub="alice", groups=("finance",), **kw) -> dict[str, str]:
    return {"Authorization": f"Bearer {iam.issuer.token(sub, list(groups), **kw)}"}


async def test_an_allowed_upgrade_is_proxied_both_ways_with_our_identity(iam):
    headers = {**_bearer(iam), "X-Forwarded-User": "mallory", "X-Request-Id": "ws-allowed"}
    async with connect(_url(iam, "/ws/headers"), additional_headers=headers, proxy=None) as ws:
        seen = json.loads(await ws.recv())
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01binary")
        assert await ws.recv() == b"\x00\x01binary"
    assert seen["x-forwarded-user"] == "alice"
    assert seen["x-forwarded-groups"] == "finance"
    assert "x-iam-assertion" in seen and "authorization" not in seen
    closed = _close_event(iam, lambda e: e["request_id"] == "ws-allowed")
    [upgrade] = [e for e in iam.audit_events() if e["decision_id"] == closed["decision_id"] and "websocket" not in e]
    assert upgrade["outcome"] == "allowed"
    assert upgrade["input"]["attributes"]["request"]["http"]["headers"]["upgrade"].lower() == "websocket"
    assert closed["websocket"]["closed_by"] == "client" and closed["websocket"]["close_code"] == 1000
    assert closed["identity"] == upgrade["identity"] and closed["route"] == upgrade["route"]
    assert closed["websocket"]["bytes_in"] == len("hello") + len(b"\x00\x01binary")
    assert closed["websocket"]["bytes_out"] > closed["websocket"]["bytes_in"]  # the headers document too
    assert closed["websocket"]["duration_ms"] > 0


def test_the_policy_sees_the_upgrade(iam):
    import httpx

    r = httpx.get(f"{iam.url}/ws/echo", headers=_bearer(iam))
    assert r.status_code == 403 and r.text == "no websocket for you"


async def test_the_documented_websocket_policy(iam):
    """docs/configuration.md's rule: websockets for the `streamers` group only."""
    async with connect(_url(iam, "/streams/ws/echo"), additional_headers=_bearer(iam, "sam", ["streamers"]),
                       proxy=None) as ws:
        await ws.send("on air")
        assert await ws.recv() == "on air"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(_url(iam, "/streams/ws/echo"), additional_headers=_bearer(iam), proxy=None):
            pass
    assert refused.value.response.status_code == 403


async def test_refused_upgrades_get_the_refusal(iam):
    with pytest.raises(InvalidStatus) as missing:
        async with connect(_url(iam, "/ws/echo"), proxy=None):
            pass
    assert missing.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as denied:
        async with connect(_url(iam, "/ws/echo"), additional_headers=_bearer(iam, "bob", ["sales"]), proxy=None):
            pass
    assert denied.value.response.status_code == 403
    assert denied.value.response.body == b"no websocket for you"


async def test_the_upstream_s_close_code_reaches_the_client(iam):
    async with connect(_url(iam, "/ws/close"), additional_headers=_bearer(iam), proxy=None) as ws:
        await ws.send("bye")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 4000


async def test_an_expiring_token_closes_the_socket_at_expiry(iam):
    started = time.monotonic()
    async with connect(_url(iam, "/ws/echo"), additional_headers=_bearer(iam, ttl=2), proxy=None) as ws:
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.send("ping")
                await asyncio.wait_for(ws.recv(), 5)
                await asyncio.sleep(0.1)
    assert ws.close_code == 1008 and ws.close_reason == "session_expired"
    assert time.monotonic() - started < 5


async def test_a_revoked_api_key_closes_the_socket(iam):
    record, key = create_key(iam.key_file, PEPPER, "streamer", [], None)
    await _wait_key_loaded(iam, key)
    async with connect(_url(iam, "/keys/ws/echo"), additional_headers={"X-API-Key": key}, proxy=None) as ws:
        await ws.send("before")
        assert await ws.recv() == "before"
        revoke_key(iam.key_file, record.id)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1008 and ws.close_reason == "session_revoked"


async def test_a_slow_upstream_slows_the_client_instead_of_filling_the_proxy(iam):
    """The upstream reads nothing for 3 s while the client offers 200 MiB: what leaves the client
    waits in socket buffers (the kernel's, up to tcp_rmem's maximum per hop), not in the proxy,
    whose memory stays flat, and the client is held back. Random bytes, no compression."""
    chunk, count = os.urandom(1024 * 1024), 200
    sent, peak = 0, 0
    before = _rss_mib(iam.process.pid)
    async with connect(_url(iam, "/ws/slow"), additional_headers=_bearer(iam), proxy=None, compression=None,
                       max_size=None, write_limit=64 * 1024) as ws:
        async def writer():
            nonlocal sent
            for _ in range(count):
                await ws.send(chunk)
                sent += 1

        task = asyncio.create_task(writer())
        for _ in range(20):  # 2 s, while the upstream sleeps
            await asyncio.sleep(0.1)
            peak = max(peak, _rss_mib(iam.process.pid))
        stalled_at = sent
        received = 0
        while received < count:
            received += len(await asyncio.wait_for(ws.recv(), 30)) // len(chunk)
        await task
    assert stalled_at < count * 3 / 4, f"{stalled_at} MiB left the client while the upstream read nothing"
    assert peak - before < 48, f"the proxy grew by {peak - before} MiB"
    assert received == count


def _rss_mib(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) // 1024


def _close_event(iam, which, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in iam.audit_events() if "websocket" in e and which(e)]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError("no close event")


async def _wait_key_loaded(iam, key: str) -> None:
    """The proxy re-reads the key file within its reload interval."""
    import httpx

    deadline = time.monotonic() + 10
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            r = await client.get(f"{iam.url}/keys/ws/echo", headers={"X-API-Key": key})
            if r.status_code != 401:
                return
            await asyncio.sleep(0.1)
    raise AssertionError("the new API key was never accepted")


os.environ.setdefault("WS_APIKEY_PEPPER", PEPPER)  # parse-time interpolation in ProxyProcess's child
