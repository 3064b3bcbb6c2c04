"""GuardedHttp: uvicorn's httptools protocol with the listener's deadlines and size limits.

    header deadline   from a connection's first byte (a keep-alive request's first byte) to the end
                      of the request head, however slowly the bytes come: 408
    body idle         the longest silence while a body is being received; time the proxy itself
                      holds back (reading paused, 100-continue not sent yet) does not count: 408
    request line      the target over max_uri_bytes: 414
    headers           one header over max_header_line_bytes, more than max_header_count, or more than
                      max_header_bytes in all: 431 (the head's raw bytes are bounded too, so an endless
                      header is cut while it is still arriving)
    malformed         what httptools cannot parse: 400

Each refusal is answered with `Connection: close`, then the connection is closed, counted and logged
by the guard. A request already handed to the app sees `http.disconnect`; if its response had
started, the connection is only closed. The parser is stopped from inside its callbacks by raising,
which httptools turns into HttpParserCallbackError (tests/unit/test_listener_internals.py pins the
uvicorn and httptools behaviour this relies on).
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import TYPE_CHECKING, Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..responses import PROBLEM_TYPE
from ..tls import tls_scope_extension

if TYPE_CHECKING:
    from .guard import Guard

log = logging.getLogger("iam_proxy.listener")

STATUS = {"header_timeout": 408, "body_timeout": 408, "uri_too_long": 414, "header_line_too_long": 431,
          "too_many_headers": 431, "headers_too_large": 431, "malformed": 400, "connection_limit": 429}


def _answer(reason: str) -> bytes:
    status = http.HTTPStatus(STATUS[reason])
    body = orjson.dumps({"type": PROBLEM_TYPE + reason, "title": status.phrase, "status": status.value,
                         "reason": reason})
    return (f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


ANSWERS = {reason: _answer(reason) for reason in STATUS}


class _Stop(Exception):
    """Raised in a parser callback to stop parsing; the reason is in GuardedHttp._refusal."""


class GuardedHttp(HttpToolsProtocol):
    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, guard: "Guard", own_slot: bool = True) -> None:
        """`own_slot`: this protocol takes the client's ledger slot (plain HTTP); over TLS the
        handshake protocol holds it (handshake.py)."""
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        limits = guard.limits
        self._header_timeout = limits.header_timeout_seconds
        self._body_idle_timeout = limits.body_idle_timeout_seconds
        self._max_uri = limits.max_uri_bytes
        self._max_line = limits.max_header_line_bytes
        self._max_count = limits.max_header_count
        self._max_header_bytes = limits.max_header_bytes
        # request line and header lines with their separators: what a head within the limits can take
        self._head_budget = limits.max_uri_bytes + limits.max_header_bytes + 4 * limits.max_header_count + 64
        self._own_slot = own_slot
        self._admitted = False
        self._tls: dict[str, Any] | None = None
        self._deadline: asyncio.TimerHandle | None = None  # the header deadline or the body idle check
        self._begun = False     # a request's first byte has arrived
        self._in_head = True    # its head is not complete yet
        self._in_body = False   # its head is complete, its body is not
        self._head_bytes = 0
        self._uri_bytes = 0
        self._header_count = 0
        self._header_bytes = 0
        self._last_read = 0.0
        self._refusal: str | None = None
        self._closed = False

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._own_slot:
            self._admitted = self.guard.admit(self.client)
            if not self._admitted:
                self._closed = True
                transport.write(ANSWERS["connection_limit"])
                transport.close()
                return
        try:
            self._tls = tls_scope_extension(transport)
        except Exception:  # noqa: BLE001 - no extension rather than a dropped connection
            log.exception("could not read the peer certificate")
        self._deadline = self.loop.call_later(self._header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._closed = True
        if self._admitted:
            self._admitted = False
            self.guard.release(self.client)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._last_read = self.loop.time()
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
            return
        except httptools.HttpParserError:
            self._refuse(self._refusal or "malformed")
            return
        if self._in_head:
            # may count the tail of a previous pipelined request too: errs on the side of refusing
            self._head_bytes += len(data)
            if self._head_bytes > self._head_budget:
                self._refuse("headers_too_large")
        elif self._in_body and self._deadline is None:
            self._deadline = self.loop.call_later(self._body_idle_timeout, self._body_idle_check)

    def _upgrade(self) -> None:
        self._cancel_deadline()
        if self._admitted:  # the websocket protocol takes the transport over: its end is not ours to see
            self._admitted = False
            self.guard.release(self.client)
        if self._should_upgrade():
            self.handle_websocket_upgrade()
        else:
            self._unsupported_upgrade_warning()

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[typeddict-unknown-key]
        self._begun, self._in_head = True, True
        self._uri_bytes = self._header_count = self._header_bytes = 0
        if self._deadline is None:  # a keep-alive request: its deadline starts with its first byte
            self._deadline = self.loop.call_later(self._header_timeout, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        self._uri_bytes += len(url)
        if self._uri_bytes > self._max_uri:
            self._stop("uri_too_long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._header_count += 1
        self._header_bytes += size
        if size > self._max_line:
            self._stop("header_line_too_long")
        if self._header_count > self._max_count:
            self._stop("too_many_headers")
        if self._header_bytes > self._max_header_bytes:
            self._stop("headers_too_large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_deadline()
        self._in_head, self._in_body, self._head_bytes = False, True, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._begun = self._in_body = False
        self._cancel_deadline()
        super().on_message_complete()

    def _stop(self, reason: str) -> None:
        self._refusal = reason
        raise _Stop(reason)

    # ------------------------------------------------------------------ deadlines and refusals

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        self._refuse("header_timeout")

    def _body_idle_check(self) -> None:
        self._deadline = None
        if not self._in_body or self._closed:
            return
        now = self.loop.time()
        if self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
            self._last_read = now  # the proxy holds back, not the client: the silence starts afresh later
        remaining = self._body_idle_timeout - (now - self._last_read)
        if remaining > 0:
            self._deadline = self.loop.call_later(remaining, self._body_idle_check)
        else:
            self._refuse("body_timeout")

    def _refuse(self, reason: str) -> None:
        """Answer `reason` with Connection: close (unless a response is on the wire) and close."""
        if self._closed:
            return
        self._closed = True
        self._cancel_deadline()
        self.guard.refused(self.client, reason)
        cycle = self.cycle
        in_flight = cycle is not None and not cycle.response_complete
        if in_flight:  # the app's receive() now returns http.disconnect and its send() is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        if self._begun and not (in_flight and cycle.response_started):
            self.transport.write(ANSWERS[reason])
        self.transport.close()
