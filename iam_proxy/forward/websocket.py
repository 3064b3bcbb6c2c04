"""Websockets: an upgrade is decided like any request, then proxied both ways until it ends.

    upgrade -> decide (authenticate, enrich, policy, audit) -> connect upstream -> accept
            -> pump client->upstream | pump upstream->client | watch the session -> close both -> audit

The policy sees the upgrade as the GET it is, with its `upgrade: websocket` header. A refused upgrade
gets the refusal (status, headers, body) where the server supports ASGI's denial response, a plain
403 otherwise. Messages are passed one at a time: each pump awaits the other side's send, which waits
while that side's buffers are full, so a slow reader slows its writer instead of filling memory.

An open socket is watched: at the identity's expiry, and every `websockets.recheck_seconds`, the
upgrade is decided again (and audited, like any decision); an expired, revoked or refused session
closes both sides with 1008. When the socket closes, a second event with the upgrade's
`decision_id` records how it ended (`websocket`: close code, who closed it, duration, bytes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ..audit.auditor import Auditor
from ..audit.event import build_event
from ..extauthz.check import Check, Decide, Verdict, as_bytes, as_text
from ..header_safety import HOP_BY_HOP

log = logging.getLogger("iam_proxy.websocket")

POLICY_VIOLATION = 1008  # RFC 6455: the session expired, was revoked, or is no longer allowed
MAX_MESSAGE = 16 * 1024 * 1024  # as uvicorn's default for the client side
_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                        "sec-websocket-protocol", "host", *HOP_BY_HOP})
_UNSENDABLE = frozenset({1004, 1005, 1006, 1015})  # reserved: they describe a close, never travel in one


def _sendable(code: int | None) -> int:
    return code if code is not None and 1000 <= code <= 4999 and code not in _UNSENDABLE else 1000


@dataclass
class _Traffic:
    started: float = field(default_factory=time.monotonic)
    bytes_in: int = 0  # client -> upstream
    bytes_out: int = 0  # upstream -> client
    messages_in: int = 0
    messages_out: int = 0


def check_of(scope: dict[str, Any]) -> Check:
    headers = [(as_text(k).lower(), as_text(v)) for k, v in scope["headers"]]
    raw_path = as_text(scope.get("raw_path") or scope["path"].encode())
    query = as_text(scope.get("query_string", b""))
    return Check(method="GET", host=next((v for k, v in headers if k == "host"), ""),
                 path=raw_path + (f"?{query}" if query else ""), headers=headers,
                 client=(scope.get("client") or ("", 0))[0], via=None,
                 scheme="https" if scope.get("scheme") == "wss" else "http",
                 protocol=f"HTTP/{scope.get('http_version', '1.1')}")


class WebSocketProxy:
    def __init__(self, decide: Decide, auditor: Auditor, recheck_seconds: float) -> None:
        self._decide = decide
        self._auditor = auditor
        self._recheck = recheck_seconds

    async def handle(self, scope: dict[str, Any], receive, send) -> None:
        check = check_of(scope)
        verdict = await self._decide(check)
        if (await receive())["type"] != "websocket.connect":
            return
        if not verdict.allowed or verdict.upstream_url is None:
            await _refuse(scope, send, verdict)
            return
        traffic = _Traffic()
        try:
            upstream = await connect(
                "ws" + verdict.upstream_url.removeprefix("http"), proxy=None, max_size=MAX_MESSAGE,
                additional_headers=[(k, v) for k, v in verdict.forward_headers if k not in _HANDSHAKE],
                subprotocols=scope.get("subprotocols") or None, open_timeout=10,
                compression=None)  # the upstream is near: no CPU spent deflating for it
        except (OSError, InvalidHandshake, asyncio.TimeoutError) as exc:
            log.warning("websocket %s: upstream refused or unreachable: %s", verdict.decision_id, exc)
            await send({"type": "websocket.close", "code": 1011})
            self._record(scope, check, verdict, traffic, 1011, "upstream", "upstream_unavailable")
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol,
                    "headers": [(as_bytes(k), as_bytes(v)) for k, v in verdict.client_headers]})
        code, closed_by, reason = await self._relay(check, verdict, receive, send, upstream, traffic)
        self._record(scope, check, verdict, traffic, code, closed_by, reason)

    async def _relay(self, check: Check, verdict: Verdict, receive, send, upstream: ClientConnection,
                     traffic: _Traffic) -> tuple[int, str, str]:
        """Until one side closes or the session ends: (close code, who closed, reason code)."""
        tasks = {asyncio.create_task(self._client_to_upstream(receive, upstream, traffic)): "client",
                 asyncio.create_task(self._upstream_to_client(upstream, send, traffic)): "upstream",
                 asyncio.create_task(self._watch(check, verdict.expires_at)): "proxy"}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finished = next(iter(done))
        closed_by = tasks[finished]
        code, reason = finished.result() if not finished.cancelled() and finished.exception() is None \
            else (1011, "websocket_error")
        if closed_by != "client":
            await _quietly(send({"type": "websocket.close", "code": _sendable(code),
                                 "reason": reason if closed_by == "proxy" else ""}))
        if closed_by != "upstream":
            await _quietly(upstream.close(_sendable(code), reason if closed_by == "proxy" else ""))
        return code, closed_by, reason

    @staticmethod
    async def _client_to_upstream(receive, upstream: ClientConnection, traffic: _Traffic) -> tuple[int, str]:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return message.get("code", 1000), "closed"
            data = message.get("text") if message.get("text") is not None else message.get("bytes") or b""
            traffic.messages_in += 1
            traffic.bytes_in += len(data.encode() if isinstance(data, str) else data)
            try:
                await upstream.send(data)  # waits while the upstream's buffers are full
            except ConnectionClosed:
                return upstream.close_code or 1006, "closed"

    @staticmethod
    async def _upstream_to_client(upstream: ClientConnection, send, traffic: _Traffic) -> tuple[int, str]:
        try:
            async for data in upstream:
                traffic.messages_out += 1
                if isinstance(data, str):
                    traffic.bytes_out += len(data.encode())
                    await send({"type": "websocket.send", "text": data})
                else:
                    traffic.bytes_out += len(data)
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        return upstream.close_code or 1006, "closed"

    async def _watch(self, check: Check, expires_at: float | None) -> tuple[int, str]:
        """Ends when the session does: its identity expires, or deciding again refuses it."""
        while True:
            wait = self._recheck if expires_at is None else min(self._recheck, expires_at - time.time())
            await asyncio.sleep(max(wait, 0.0))
            if expires_at is not None and time.time() >= expires_at:
                return POLICY_VIOLATION, "session_expired"
            verdict = await self._decide(check)
            if not verdict.allowed:  # a refusal at or past the expiry is the expiry
                expired = expires_at is not None and time.time() >= expires_at
                return POLICY_VIOLATION, "session_expired" if expired else "session_revoked"
            expires_at = verdict.expires_at

    def _record(self, scope: dict[str, Any], check: Check, verdict: Verdict, traffic: _Traffic, code: int,
                closed_by: str, reason: str) -> None:
        """The close, as an event of the upgrade's shape with its decision_id."""
        event = build_event(ctx=None, scope={**scope, "method": "GET"}, status=101, outcome="allowed",
                            reason=reason, decision=None, policy_input=None, policy_revision=None,
                            client_address=check.client)
        event["decision_id"] = verdict.decision_id
        event["request_id"] = check.header("x-request-id") or ""
        event["http"]["host"] = check.host
        event["route"], event["identity"] = verdict.route, verdict.identity
        event["websocket"] = {"close_code": code, "closed_by": closed_by,
                              "duration_ms": round((time.monotonic() - traffic.started) * 1000, 1),
                              "bytes_in": traffic.bytes_in, "bytes_out": traffic.bytes_out,
                              "messages_in": traffic.messages_in, "messages_out": traffic.messages_out}
        try:
            self._auditor.record(event)
        except Exception:  # noqa: BLE001 - the socket is closed already; the failure is logged and counted
            log.exception("audit: the close of websocket %s could not be recorded", verdict.decision_id)


async def _refuse(scope: dict[str, Any], send, verdict: Verdict) -> None:
    """The refusal itself where the server can send it (ASGI's websocket denial response)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": verdict.status,
                    "headers": [(as_bytes(k), as_bytes(v)) for k, v in verdict.client_headers]})
        await send({"type": "websocket.http.response.body", "body": verdict.body})
    else:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION})


async def _quietly(closing) -> None:
    try:
        await closing
    except Exception:  # noqa: BLE001 - that side is gone already
        pass
