"""POST /.iam/ssf/events: push delivery of Security Event Tokens (RFC 8935).

    202                    accepted (or a SET already received: the transmitter may retry)
    400 {"err", "description"}   refused, with the RFC's error code (invalid_request, invalid_key,
                           invalid_issuer, invalid_audience, ...); the transmitter should not retry
    401 {"err": "authentication_failed"}   the push did not carry the configured Authorization
    503                    the transmitter's keys cannot be fetched now; retry later
"""

from __future__ import annotations

import hmac
from typing import Any

from ..responses import send_json
from .receiver import Receiver

CONTENT_TYPE = "application/secevent+jwt"


async def _body(receive, limit: int) -> bytes | None:
    body = bytearray()
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            return None
    return bytes(body)


async def _empty(send, status: int) -> int:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
    return status


class PushEndpoint:
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self._authorizations = [t.push_authorization.get_secret_value().encode()
                                for t in receiver.settings.transmitters if t.push_authorization is not None]

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        if not self._authorizations:
            return True  # the signature authenticates the SET itself
        given = headers.get(b"authorization", b"")
        return any(hmac.compare_digest(given, expected) for expected in self._authorizations)

    async def _refuse(self, send, status: int, err: str, reason: str, description: str) -> int:
        """A push refused before its SET was read: audited like a refused SET."""
        self.receiver.audit(None, "push", "rejected", reason, {"err": err})
        return await send_json(send, status, {"err": err, "description": description})

    async def handle(self, scope: dict[str, Any], receive, send) -> int:
        if scope["method"] != "POST":
            return await send_json(send, 405, {"err": "invalid_request", "description": "POST a SET"},
                                   [(b"allow", b"POST")])
        headers = dict(scope["headers"])
        if not self._authorized(headers):
            return await self._refuse(send, 401, "authentication_failed", "push_unauthorized",
                                      "the push is not authorized")
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1").lower()
        if content_type != CONTENT_TYPE:
            return await self._refuse(send, 400, "invalid_request", "push_content_type",
                                      f"the content type must be {CONTENT_TYPE}")
        body = await _body(receive, self.receiver.settings.max_set_bytes)
        if body is None:
            return await self._refuse(send, 400, "invalid_request", "set_too_large", "the SET is too large")
        outcome = await self.receiver.receive(body.decode("latin-1").strip(), "push")
        if outcome.status == "rejected":
            return await send_json(send, 400, {"err": outcome.err, "description": outcome.description})
        if outcome.status == "unavailable":
            return await _empty(send, 503)
        return await _empty(send, 202)
