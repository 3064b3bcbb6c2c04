"""The upstream HTTP/1.1 client against scripted upstreams: reuse, bodies both ways, the protocol's
corners (HEAD, interim responses, bodies ended by close), and every way an upstream can fail."""

from __future__ import annotations

import asyncio

import pytest

from iam_proxy.forward.http1 import Http1Client, UpstreamBroken, UpstreamConnectFailed, UpstreamTimedOut


class Upstream:
    """A TCP server answering each request head with the next scripted reply (bytes or a coroutine)."""

    def __init__(self, replies) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0

    async def __aenter__(self) -> "Upstream":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b""
                if b"content-length:" in head.lower():
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                elif b"transfer-encoding: chunked" in head.lower():
                    body = await reader.readuntil(b"0\r\n\r\n")
                self.requests.append(head + body)
                reply = self.replies.pop(0)
                if callable(reply):
                    await reply(writer)
                else:
                    writer.write(reply)
                    await writer.drain()
                if reply == CLOSE_AFTER:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
CLOSE_AFTER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"


async def _get(client: Http1Client, port: int, method: str = "GET", body=None, headers=None, timeout: float = 2.0):
    response = await client.request(method, "http", "127.0.0.1", port, "/x?a=1",
                                    [("host", "up"), *(headers or [])], body,
                                    connect_timeout=1, read_timeout=timeout)
    try:
        data = b"".join([chunk async for chunk in response.chunks()])
    finally:
        response.release()
    return response.status, dict(response.headers), data


async def test_keep_alive_connections_are_reused_and_requests_are_well_formed():
    async with Upstream([OK, OK, OK]) as up:
        client = Http1Client()
        for _ in range(3):
            assert (await _get(client, up.port))[2] == b"hello"
        await client.close()
    assert up.connections == 1
    assert up.requests[0] == b"GET /x?a=1 HTTP/1.1\r\nhost: up\r\n\r\n"


async def test_a_body_without_length_goes_chunked_and_one_with_length_as_is():
    async def body():
        yield b"abc"
        yield b"defg"

    async with Upstream([OK, OK]) as up:
        client = Http1Client()
        await _get(client, up.port, "POST", body())
        await _get(client, up.port, "PUT", body(), headers=[("content-length", "7")])
        await client.close()
    assert up.requests[0].endswith(b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    assert up.requests[1].endswith(b"content-length: 7\r\n\r\nabcdefg")


async def test_head_interim_and_close_delimited_responses():
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"
    until_close = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"
    async with Upstream([head]) as up:
        client = Http1Client()
        assert await _get(client, up.port, "HEAD") == (200, {b"content-length": b"1000"}, b"")
        await client.close()
    async with Upstream([interim]) as up:
        client = Http1Client()
        assert (await _get(client, up.port))[::2] == (201, b"ok")
        await client.close()
    async with Upstream([until_close]) as up:
        client = Http1Client()
        assert (await _get(client, up.port))[2] == b"all of it"
        await client.close()


async def test_a_pooled_connection_the_upstream_closed_is_replaced_for_a_bodyless_request():
    async with Upstream([CLOSE_AFTER, OK]) as up:
        client = Http1Client()
        assert (await _get(client, up.port))[2] == b"ok"
        await asyncio.sleep(0.05)
        assert (await _get(client, up.port))[2] == b"hello"
        await client.close()
    assert up.connections == 2


async def test_failures_are_typed():
    client = Http1Client()
    async with Upstream([]) as up:
        port = up.port
    with pytest.raises(UpstreamConnectFailed):
        await _get(client, port)  # nothing listens any more

    async def stall_head(writer):
        await asyncio.sleep(1)

    async def stall_body(writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(1)

    async with Upstream([stall_head, stall_body, b"HTTP/1.1 2OO nonsense\r\n\r\n"]) as up:
        with pytest.raises(UpstreamTimedOut):
            await _get(client, up.port, timeout=0.2)
        with pytest.raises(UpstreamTimedOut):  # the head arrived; the body stalls
            await _get(client, up.port, timeout=0.2)
        with pytest.raises(UpstreamBroken, match="malformed"):
            await _get(client, up.port)
    await client.close()


async def test_a_header_with_a_line_break_is_never_sent():
    client = Http1Client()
    with pytest.raises(ValueError, match="line break"):
        await client.request("GET", "http", "127.0.0.1", 1, "/", [("host", "up"), ("x-a", "1\r\nx-admin: yes")],
                             None, connect_timeout=1, read_timeout=1)
