"""The upstream hop: request and response bodies streamed both ways over a pooled HTTP/1.1 client.

Timeouts map to statuses in one place: connect failure (or connect timeout) -> 502, no answer (or a
read stall) within the route's timeout -> 504. Once the response has started, a failure can only
abort the connection.
"""

from __future__ import annotations

import time
from typing import AsyncIterator

from ..context import RequestContext
from ..core.errors import UpstreamTimeout, UpstreamUnavailable
from ..routes.matcher import CompiledRoute
from .headers import response_headers
from .http1 import Http1Client, UpstreamBroken, UpstreamConnectFailed, UpstreamTimedOut


class ClientDisconnected(Exception):
    pass


class UpstreamResponseFailed(Exception):
    """The upstream failed after the response had started; only the connection can be aborted."""


def _has_body(ctx: RequestContext) -> bool:
    length = ctx.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in ctx.headers


async def _request_body(receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


class UpstreamClient:
    def __init__(self, max_connections: int = 1000, withheld_response_headers: frozenset[bytes] = frozenset()
                 ) -> None:
        self._max_connections = max_connections
        self._withheld = withheld_response_headers
        self._client: Http1Client | None = None

    @property
    def client(self) -> Http1Client:
        if self._client is None:  # made on first use: it belongs to the running event loop
            self._client = Http1Client(max_connections=self._max_connections, keepalive_seconds=30)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def target_for(self, ctx: RequestContext, route: CompiledRoute) -> str:
        """The request target sent upstream: the route's base path, the (prefix-stripped) path, the query."""
        path = ctx.raw_path
        prefix = route.settings.strip_prefix
        if prefix and (path == prefix or path.startswith(prefix + "/")):  # whole segments only
            path = path[len(prefix):] or "/"
        target = f"{route.upstream_base_path}{path}"
        if ctx.query_string:
            target += "?" + ctx.query_string
        return target

    def url_for(self, ctx: RequestContext, route: CompiledRoute) -> str:
        return f"{route.upstream_scheme}://{route.upstream_host}{self.target_for(ctx, route)}"

    async def forward(self, ctx: RequestContext, route: CompiledRoute, headers: list[tuple[str, str]],
                      receive, send, extra_response_headers: list[tuple[str, str]]) -> int:
        """Send the request upstream and stream the answer to the client; returns the status sent.
        The last body message is the one with `more_body` false: the caller's `send` records the
        request (audit) before it lets that message out."""
        settings = route.settings
        if not any(name == "host" for name, _ in headers):
            headers = [("host", route.upstream_host), *headers]
        body: AsyncIterator[bytes] | None = _request_body(receive) if _has_body(ctx) else None
        host, port = route.upstream_address
        started = time.perf_counter()
        try:
            response = await self.client.request(
                ctx.method, route.upstream_scheme, host, port, self.target_for(ctx, route), headers, body,
                connect_timeout=settings.connect_timeout_seconds, read_timeout=settings.timeout_seconds)
        except UpstreamTimedOut as exc:
            raise UpstreamTimeout(detail=f"{settings.upstream}: {exc}") from None
        except (UpstreamConnectFailed, UpstreamBroken) as exc:
            raise UpstreamUnavailable(detail=f"{settings.upstream}: {exc}") from None

        ctx.upstream_status = response.status
        ctx.upstream_latency_ms = round((time.perf_counter() - started) * 1000, 3)
        try:
            out_headers = response_headers(response.headers, self._withheld)
            out_headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                            for k, v in extra_response_headers]
            await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
            # One chunk is held back, so the last message carries data: the caller's send sees the end
            # of the body before the client has it (a response without a body ends at an empty one).
            held = b""
            try:
                async for chunk in response.chunks():
                    if held:
                        await send({"type": "http.response.body", "body": held, "more_body": True})
                    held = chunk
            except (UpstreamTimedOut, UpstreamBroken) as exc:
                raise UpstreamResponseFailed(f"{type(exc).__name__}: {exc}") from None
            await send({"type": "http.response.body", "body": held})
        finally:
            response.release()
        return response.status
