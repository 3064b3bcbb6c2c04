"""GuardedHttp: uvicorn's httptools protocol with the listener's deadlines and size limits.

    header deadline   from a connection's first byte (a keep-alive request's first byte) to the end
                      of the request head, however slowly the bytes come: 408
    body idle         the longest silence while a body is being received; time the proxy itself
                      holds back (reading paused, 100-continue not sent yet) does not count: 408
    request line      the target over max_uri_bytes: 414
    headers           one header over max_header_line_bytes, more than max_header_count, or more than
                      max_header_bytes in all: 431. These are checked when the head is complete; the
                      head's raw bytes are bounded while it arrives, so an endless header is cut early
    malformed         what httptools cannot parse: 400

Each refusal is answered with `Connection: close`, then the connection is closed, counted and logged
by the guard. A request already handed to the app sees `http.disconnect`; if its response had
started, the connection is only closed. The parser is stopped from inside on_headers_complete by
raising, which httptools turns into HttpParserCallbackError (tests/unit/test_listener_internals.py
pins the uvicorn and httptools behaviour this relies on).

Cost: one timer per connection, re-armed when it fires rather than per request, and a few
comparisons per request; bench/listener.py measures it against uvicorn's own protocol.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import TYPE_CHECKING, Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..core.responses import PROBLEM_TYPE
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


_IDLE, _HEAD, _BODY = range(3)  # where the connection stands: between requests, in a head, in a body


class _Stop(Exception):
    """Raised in a parser callback to stop parsing; the reason is in GuardedHttp._refusal."""


class _HeadWithBody:
    """The connection's transport, sending a response's head together with what follows it: uvicorn
    writes the head and the body separately, so every small response cost two sends (and the client
    two reads). The first write after a request's head arrived (`hold_next`) is held until the next
    write, which normally follows at once; if none does, it leaves at the next turn of the event loop.
    Holding only that one write keeps the rest of a streamed response from waiting a turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self.hold_next = False

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif self.hold_next:
            self.hold_next, self._held = False, data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:  # a websocket takes the connection over
        self.flush()
        self._transport.set_protocol(protocol)

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttp(HttpToolsProtocol):
    """One timer per connection, re-armed only when it fires (not per request), watches the head and
    the body; the size limits are checked once per head, exactly only when its bytes could exceed them."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, guard: "Guard", own_slot: bool = True) -> None:
        """`own_slot`: this protocol takes the client's ledger slot (plain HTTP); over TLS the
        handshake protocol holds it (handshake.py)."""
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        self.limits = limits = guard.limits
        # request line and header lines with their separators: what a head within the limits can take
        self._head_budget = limits.max_uri_bytes + limits.max_header_bytes + 4 * limits.max_header_count + 64
        self._own_slot = own_slot
        self._admitted = False
        self._tls: dict[str, Any] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._phase = _HEAD      # a new connection owes its first head from now on
        self._begun = False      # the current request's first byte has arrived
        self._head_started = 0.0
        self._last_read = 0.0
        self._head_bytes = 0     # bytes of chunks that ended inside the current head
        self._chunk = 0          # the chunk being parsed
        self._refusal: str | None = None
        self._closed = False
        self._writer: _HeadWithBody

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._writer = _HeadWithBody(transport, self.loop)
        super().connection_made(self._writer)  # type: ignore[arg-type]
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
        self._head_started = self.loop.time()
        self._watchdog = self.loop.call_later(self.limits.header_timeout_seconds, self._watch)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        self._closed = True
        if self._admitted:
            self._admitted = False
            self.guard.release(self.client)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._last_read = self.loop.time()
        self._chunk = len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
            return
        except httptools.HttpParserError:
            self._refuse(self._refusal or "malformed")
            return
        if self._phase == _HEAD:
            # may count the tail of a previous pipelined request too: errs on the side of checking
            self._head_bytes += len(data)
            if self._head_bytes > self._head_budget:  # an endless head is cut while it arrives
                self._refuse("headers_too_large")

    def _upgrade(self) -> None:
        self._stop_watching()
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
        if self._phase != _HEAD:  # a keep-alive request: its deadline starts with its first byte
            self._phase, self._head_started = _HEAD, self.loop.time()
        self._begun = True

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self.url) > limits.max_uri_bytes:
            self._stop("uri_too_long")
        if len(self.headers) > limits.max_header_count:
            self._stop("too_many_headers")
        if self._head_bytes + self._chunk > limits.max_header_line_bytes:  # else no header can be too long
            self._check_header_sizes()
        self._phase, self._head_bytes = _BODY, 0
        self._writer.hold_next = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase, self._begun = _IDLE, False
        super().on_message_complete()

    def _check_header_sizes(self) -> None:
        total = 0
        for name, value in self.headers:
            size = len(name) + len(value)
            if size > self.limits.max_header_line_bytes:
                self._stop("header_line_too_long")
            total += size
        if total > self.limits.max_header_bytes:
            self._stop("headers_too_large")

    def _stop(self, reason: str) -> None:
        self._refusal = reason
        raise _Stop(reason)

    # ------------------------------------------------------------------ deadlines and refusals

    def _stop_watching(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _watch(self) -> None:
        """The connection's timer: refuse a head past its deadline or a body silent too long, else
        sleep until the earliest moment either could be due."""
        self._watchdog = None
        if self._closed:
            return
        now = self.loop.time()
        limits = self.limits
        wait = limits.header_timeout_seconds
        if self._phase == _HEAD:
            wait = self._head_started + limits.header_timeout_seconds - now
            if wait <= 0:
                return self._refuse("header_timeout")
        elif self._phase == _BODY:
            if self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
                self._last_read = now  # the proxy holds back, not the client: the silence starts afresh
            wait = self._last_read + limits.body_idle_timeout_seconds - now
            if wait <= 0:
                return self._refuse("body_timeout")
        self._watchdog = self.loop.call_later(wait, self._watch)

    def _refuse(self, reason: str) -> None:
        """Answer `reason` with Connection: close (unless a response is on the wire) and close."""
        if self._closed:
            return
        self._closed = True
        self._stop_watching()
        self.guard.refused(self.client, reason)
        cycle = self.cycle  # in a body: this request's; in a head: the previous request's, if any
        busy = cycle is not None and not cycle.response_complete
        if busy:  # the app's receive() now returns http.disconnect and its send() is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        # answer only where the answer is the next thing the client reads
        if self._phase == _BODY:
            answer = cycle is not None and not cycle.response_started  # the app may answer before reading it
        else:
            answer = self._begun and not busy
        if answer:
            self.transport.write(ANSWERS[reason])
        self.transport.close()
