"""Websockets behind a real Envoy whose ext_authz filter asks iam-proxy: docs/envoy.md's configuration
as written (only the ports changed), in gRPC and HTTP mode, in front of a real websocket upstream.
The upgrade is checked like any request (the policy sees it), then Envoy proxies the socket."""

from __future__ import annotations

import json
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support import start_ws_upstream

pytestmark = pytest.mark.peer("envoy")


@pytest.fixture(scope="module")
def backend_url(tmp_path_factory):
    process, port = start_ws_upstream(tmp_path_factory.mktemp("envoy-ws-upstream"))
    yield f"http://127.0.0.1:{port}"
    process.stop()


def _new_events(iam, before: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(events := iam.audit_events()[before:]) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    return events


def _bearer(iam, sub: str, groups: list[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {iam.issuer.token(sub, groups)}"}


async def test_an_allowed_upgrade_is_checked_then_proxied_both_ways(envoy, iam):
    before = len(iam.audit_events())
    headers = {**_bearer(iam, "alice", ["finance"]), "X-Forwarded-User": "mallory"}
    async with connect(f"ws://127.0.0.1:{envoy['port']}/envoytest/headers", additional_headers=headers, proxy=None) as ws:
        seen = json.loads(await ws.recv())
        await ws.send("hello through envoy")
        assert await ws.recv() == "hello through envoy"
    assert seen["x-forwarded-user"] == "alice" and seen["x-policy"] == "granted"
    assert seen["x-iam-assertion"].count(".") == 2 and "authorization" not in seen  # credentials stay at the edge
    [event] = _new_events(iam, before)  # the check's event (Envoy sets its own request id at the edge)
    assert event["outcome"] == "allowed" and event["route"]["id"] == "envoytest" and event["identity"]["sub"] == "alice"
    assert event["input"]["attributes"]["request"]["http"]["headers"]["upgrade"].lower() == "websocket"


async def test_a_refused_upgrade_gets_the_policy_s_answer(envoy, iam):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{envoy['port']}/envoytest/headers", proxy=None,
                           additional_headers=_bearer(iam, "bob", ["sales"])):
            pass
    assert refused.value.response.status_code == 418
    assert refused.value.response.headers["x-denied-by"] == "envoytest"
