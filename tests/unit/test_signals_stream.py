"""The transmitter's refusals, as the receiver logs them (stream set-up is retried; the log says why)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from iam_proxy.settings.signals import TransmitterSettings
from iam_proxy.signals.stream import TransmitterError, call

SETTINGS = TransmitterSettings(id="kc", issuer="https://idp", audience="a", jwks_uri="https://idp/jwks")


async def _refusal(body: bytes, content_type: str) -> str:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=400, body=body, content_type=content_type)

    app = web.Application()
    app.router.add_post("/streams", handler)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        with pytest.raises(TransmitterError) as refused:
            await call(session, SETTINGS, "POST", str(server.make_url("/streams")), {"delivery": {}})
    return str(refused.value)


def test_a_refusal_names_what_the_transmitter_said():
    # Keycloak 26.7 refusing a push URL its receiver client does not list
    said = asyncio.run(_refusal(b'{"error":"stream_error","error_description":"delivery.endpoint_url is not in '
                                b'the receiver client\'s ssf.validPushUrls"}', "application/json"))
    assert said.endswith("answered 400: stream_error - delivery.endpoint_url is not in the receiver client's "
                         "ssf.validPushUrls")


def test_a_refusal_without_json_is_its_status():
    assert asyncio.run(_refusal(b"<html>no</html>", "text/html")).endswith("answered 400")
