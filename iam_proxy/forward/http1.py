"""A lean HTTP/1.1 client for the upstream hop: keep-alive pool, streaming both ways, one parser.

Chosen by benchmark (bench/stack.py, docs/performance.md): behind the same uvicorn, forwarding with
aiohttp's client cost about 250 us per request, with this one about 100. It does only what the
proxy needs: one request at a time per connection (no pipelining), bodies streamed with
backpressure, responses parsed by httptools (llhttp, the parser uvicorn already uses), TLS to
`https` upstreams with the system's trust store.

Failures are typed so the forwarder can map them to statuses in one place:
`UpstreamConnectFailed` (nothing sent), `UpstreamTimedOut` (no response head in time),
`UpstreamBroken` (the connection failed or the response was malformed).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import AsyncIterator

import httptools

HIGH_WATER = 256 * 1024  # response bytes buffered before the upstream socket stops being read


class UpstreamConnectFailed(Exception):
    pass


class UpstreamTimedOut(Exception):
    pass


class UpstreamBroken(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One upstream connection; parses responses, buffers body chunks, watches for read stalls."""

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._can_write: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self.head_only = False
        self.started = False  # any byte of a response seen
        self.complete = False
        self._head: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self._paused = False
        self._read_timeout = 0.0
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        self.started = True
        if self.head_only and self.status:
            return  # a HEAD response has no body; the connection is not reused
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBroken(f"malformed response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.status and not self.complete and not self.head_only and self._reads_until_close():
            self.on_message_complete()  # a body delimited by the end of the connection
        elif not self.complete:
            self._fail(UpstreamBroken(f"connection lost: {exc}" if exc else "connection closed"))
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        if self._can_write is None or self._can_write.done():
            self._can_write = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    # ---- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim response (100 Continue, 103 Early Hints): wait for the real one
            self.headers = []
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive() and not self.head_only
        if self.head_only:
            self.complete = True
        self._wake_head()
        if self.complete:
            self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.status:
            return  # the end of an interim response
        self.complete = True
        self._stop_timer()
        self._wake()

    # ---- internals
    def _reads_until_close(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _wake_head(self) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._stop_timer()
        self._wake_head()
        self._wake()
        self.close()

    def _start_timer(self, timeout: float) -> None:
        self._read_timeout = timeout
        self._last_read = self.loop.time()
        self._timer = self.loop.call_at(self._last_read + timeout, self._check_stall)

    def _check_stall(self) -> None:
        deadline = self._last_read + self._read_timeout
        if self._paused:  # we stopped reading (a slow client), the upstream is not stalling
            self._last_read = self.loop.time()
            self._timer = self.loop.call_at(self._last_read + self._read_timeout, self._check_stall)
        elif self.loop.time() >= deadline:
            self._timer = None
            self._fail(UpstreamTimedOut(f"no data for {self._read_timeout:g} s"))
        else:
            self._timer = self.loop.call_at(deadline, self._check_stall)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # ---- used by Http1Client
    def begin(self, head_only: bool, timeout: float) -> None:
        self._reset()
        self.head_only = head_only
        self.write_timeout = timeout
        self._head = self.loop.create_future()

    def sent(self, read_timeout: float) -> None:
        """The request is out: from now on the upstream must send something every `read_timeout`."""
        if not self.complete and self._error is None:
            self._start_timer(read_timeout)

    async def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise UpstreamBroken("connection closed while sending the request")
        self.transport.write(data)
        if self._can_write is not None and not self._can_write.done():
            try:
                async with asyncio.timeout(self.write_timeout):
                    await self._can_write
            except TimeoutError:
                raise UpstreamTimedOut(f"the upstream read nothing for {self.write_timeout:g} s") from None

    async def response_head(self) -> None:
        if self._head is not None and not self._head.done():
            await self._head
        if self._error is not None and not self.status:
            raise self._error

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= HIGH_WATER // 4 and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self.complete:
                return
            self._waiter = self.loop.create_future()
            await self._waiter


class Response:
    """The head of an upstream response; `chunks()` streams the body, `release()` ends the exchange."""

    def __init__(self, pool: "Http1Client", conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers
        self._released = False

    def chunks(self) -> AsyncIterator[bytes]:
        return self._conn.body()

    def release(self) -> None:
        """Back to the pool if the response was read to its end and may be reused; else closed."""
        if self._released:
            return
        self._released = True
        self._pool._release(self._conn)


def _head_bytes(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} cannot be sent: it contains a line break or colon")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    # latin-1: every value is the string of the bytes to send (header_safety.as_wire), byte for byte
    return "\r\n".join(lines).encode("latin-1")


class Http1Client:
    def __init__(self, max_connections: int = 1000, keepalive_seconds: float = 30.0) -> None:
        self.keepalive_seconds = keepalive_seconds
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._open: set[_Connection] = set()
        self._tls: ssl.SSLContext | None = None

    async def request(self, method: str, scheme: str, host: str, port: int, target: str,
                      headers: list[tuple[str, str]], body: AsyncIterator[bytes] | None, *,
                      connect_timeout: float, read_timeout: float) -> Response:
        """Send the request and wait for the response head. `headers` must carry Host; a body is sent
        with its Content-Length header if there is one, else chunked."""
        chunked = body is not None and not any(name.lower() == "content-length" for name, _ in headers)
        if chunked:
            headers = headers + [("transfer-encoding", "chunked")]
        head = _head_bytes(method, target, headers)
        key = (scheme, host, port)
        await self._slots.acquire()
        try:
            for attempt in (1, 2):
                conn, reused = await self._connection(key, connect_timeout, fresh=attempt == 2)
                try:
                    conn.begin(method == "HEAD", read_timeout)
                    if body is None:
                        await conn.write(head)
                    else:
                        await self._send_with_body(conn, head, body, chunked)
                    conn.sent(read_timeout)
                    await conn.response_head()
                    return Response(self, conn)
                except BaseException as exc:
                    conn.close()
                    self._forget(conn)
                    # A pooled connection the upstream had closed: a bodyless request is sent once more
                    # on a fresh connection.
                    stale = isinstance(exc, UpstreamBroken) and reused and body is None and not conn.started
                    if attempt == 2 or not stale:
                        raise
            raise AssertionError("unreachable")
        except BaseException:
            self._slots.release()
            raise

    async def _send_with_body(self, conn: _Connection, head: bytes, body: AsyncIterator[bytes], chunked: bool) -> None:
        await conn.write(head)
        async for chunk in body:
            if conn.started and conn.status:
                break  # the upstream answered early (e.g. 413): stop sending
            if chunked:
                await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                await conn.write(chunk)
        else:
            if chunked:
                await conn.write(b"0\r\n\r\n")

    async def _connection(self, key: tuple[str, str, int], connect_timeout: float,
                          fresh: bool = False) -> tuple[_Connection, bool]:
        loop = asyncio.get_running_loop()
        idle = self._idle.get(key)
        while idle and not fresh:
            conn = idle.pop()
            if conn.closed or loop.time() - conn.idle_since > self.keepalive_seconds:
                conn.close()
                self._forget(conn)
                continue
            return conn, True
        scheme, host, port = key
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
                self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
            tls = self._tls
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(key), host, port, ssl=tls,
                                                       server_hostname=host if tls else None)
        except TimeoutError:
            raise UpstreamConnectFailed(f"connect timeout after {connect_timeout:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectFailed(f"{type(exc).__name__}: {exc}") from None
        self._open.add(conn)
        return conn, False

    def _release(self, conn: _Connection) -> None:
        self._slots.release()
        if conn.complete and conn.keep_alive and not conn.closed and not conn._chunks:
            conn._stop_timer()
            conn.idle_since = conn.loop.time()
            self._idle.setdefault(conn.key, []).append(conn)
        else:
            conn.close()
            self._forget(conn)

    def _forget(self, conn: _Connection) -> None:
        self._open.discard(conn)

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
