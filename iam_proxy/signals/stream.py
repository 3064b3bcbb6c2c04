"""The transmitter side the receiver reads: its /.well-known/ssf-configuration (issuer, jwks_uri,
configuration_endpoint, delivery methods), and, with `manage_stream`, a stream through the SSF
management API: the first existing stream with our delivery method is reused, else one is created
(POST configuration_endpoint) asking for `events_requested`. A poll stream's endpoint is the one the
transmitter returns in `delivery.endpoint_url`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from ..settings.signals import TransmitterSettings

log = logging.getLogger("iam_proxy.signals")

PUSH_METHOD = "urn:ietf:rfc:8935"
POLL_METHOD = "urn:ietf:rfc:8936"
MAX_DOCUMENT_BYTES = 256 * 1024


class TransmitterError(Exception):
    """The transmitter's configuration or stream could not be read or set up (retried later)."""


@dataclass(frozen=True)
class Setup:
    jwks_uri: str
    poll_url: str | None
    stream_id: str | None = None


def bearer(transmitter: TransmitterSettings) -> dict[str, str]:
    token = transmitter.bearer_token
    return {"authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}


async def call(session: aiohttp.ClientSession, transmitter: TransmitterSettings, method: str, url: str,
               body: Any = None) -> Any:
    """One JSON call to the transmitter, bounded in time and size; TransmitterError otherwise."""
    timeout = aiohttp.ClientTimeout(total=transmitter.http_timeout_seconds)
    headers = {**bearer(transmitter), "accept": "application/json"}
    data = None if body is None else orjson.dumps(body)
    if data is not None:
        headers["content-type"] = "application/json"
    try:
        async with session.request(method, url, data=data, headers=headers, timeout=timeout,
                                   allow_redirects=False) as response:
            payload = await response.content.read(MAX_DOCUMENT_BYTES + 1)
            if response.status >= 300:
                raise TransmitterError(f"{method} {url} answered {response.status}{_why(payload)}")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise TransmitterError(f"{method} {url}: {type(exc).__name__}") from None
    if len(payload) > MAX_DOCUMENT_BYTES:
        raise TransmitterError(f"{method} {url}: answer too large")
    if not payload.strip():
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise TransmitterError(f"{method} {url}: not JSON") from None


def _why(payload: bytes) -> str:
    """What a refusal says, if it says it in JSON (e.g. Keycloak's `error_description`), for the log."""
    try:
        body = orjson.loads(payload[:4096])
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(body, dict):
        return ""
    said = [str(body[k]) for k in ("error", "err", "error_description", "description") if body.get(k)]
    return f": {' - '.join(said)[:300]}" if said else ""


async def set_up(session: aiohttp.ClientSession, transmitter: TransmitterSettings, manage: bool = True) -> Setup:
    """`manage`: False in all workers but one, so that one stream is set up, not one per worker."""
    if transmitter.configuration_url is None:
        assert transmitter.jwks_uri is not None  # settings validation
        return Setup(transmitter.jwks_uri, transmitter.poll_url)
    config = await call(session, transmitter, "GET", transmitter.configuration_url)
    if not isinstance(config, dict) or config.get("issuer") != transmitter.issuer:
        raise TransmitterError(f"{transmitter.configuration_url}: issuer is not {transmitter.issuer!r}")
    jwks_uri = transmitter.jwks_uri or config.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise TransmitterError(f"{transmitter.configuration_url}: no jwks_uri")
    if not (transmitter.manage_stream and manage):
        return Setup(jwks_uri, transmitter.poll_url)
    endpoint = config.get("configuration_endpoint")
    if not isinstance(endpoint, str):
        raise TransmitterError(f"{transmitter.configuration_url}: no configuration_endpoint (manage_stream)")
    stream = await _stream(session, transmitter, endpoint)
    delivery = stream.get("delivery") if isinstance(stream.get("delivery"), dict) else {}
    poll_url = transmitter.poll_url or (delivery.get("endpoint_url") if transmitter.delivery == "poll" else None)
    if transmitter.delivery == "poll" and not isinstance(poll_url, str):
        raise TransmitterError("the poll stream has no delivery.endpoint_url")
    log.info("SSF stream %s at %s: %s delivery, events %s", stream.get("stream_id"), transmitter.id,
             transmitter.delivery, stream.get("events_delivered") or stream.get("events_requested"))
    return Setup(jwks_uri, poll_url, stream.get("stream_id"))


async def _stream(session: aiohttp.ClientSession, transmitter: TransmitterSettings, endpoint: str) -> dict[str, Any]:
    method = POLL_METHOD if transmitter.delivery == "poll" else PUSH_METHOD
    existing = await call(session, transmitter, "GET", endpoint)
    streams = existing if isinstance(existing, list) else [existing] if isinstance(existing, dict) else []
    for stream in streams:
        delivery = stream.get("delivery") if isinstance(stream, dict) else None
        if isinstance(delivery, dict) and delivery.get("method") == method and (
                method == POLL_METHOD or delivery.get("endpoint_url") == transmitter.push_endpoint_url):
            return stream
    delivery_request: dict[str, Any] = {"method": method}
    if method == PUSH_METHOD:
        delivery_request["endpoint_url"] = transmitter.push_endpoint_url
        if transmitter.push_authorization is not None:
            delivery_request["authorization_header"] = transmitter.push_authorization.get_secret_value()
    created = await call(session, transmitter, "POST", endpoint, {
        "delivery": delivery_request, "events_requested": transmitter.events_requested,
        "description": "iam-proxy shared signals receiver"})
    if not isinstance(created, dict):
        raise TransmitterError(f"POST {endpoint}: the stream configuration is not an object")
    return created
