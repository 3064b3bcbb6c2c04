"""The upstream hop: one pooled aiohttp session, request and response bodies streamed both ways.

Timeouts map to statuses in one place: connect failure -> 502, no answer (or a read stall) within
the route's timeout -> 504. Once the response has started, a failure can only abort the connection.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Callable

import aiohttp
from yarl import URL

from ..context import RequestContext
from ..errors import UpstreamTimeout, UpstreamUnavailable
from ..routes.matcher import CompiledRoute
from .headers import response_headers

CHUNK = 64 * 1024


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
    def __init__(self, max_connections: int = 1000) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0,
                                             ttl_dns_cache=300, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, ctx: RequestContext, route: CompiledRoute) -> URL:
        path = ctx.raw_path
        prefix = route.settings.strip_prefix
        if prefix and path.startswith(prefix):
            path = path[len(prefix):] or "/"
            if not path.startswith("/"):
                path = "/" + path
        target = f"{route.upstream_scheme}://{route.upstream_host}{route.upstream_base_path}{path}"
        if ctx.query_string:
            target += "?" + ctx.query_string
        return URL(target, encoded=True)

    async def forward(self, ctx: RequestContext, route: CompiledRoute, headers: list[tuple[str, str]],
                      receive, send, extra_response_headers: dict[str, str],
                      before_last_chunk: Callable[[int], None] | None = None) -> int:
        """Send the request upstream and stream the answer to the client; returns the status sent.

        `before_last_chunk(status)` runs just before the response is completed, so the caller can
        record the request (audit) before the client can see it finished."""
        settings = route.settings
        timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout_seconds,
                                        sock_connect=settings.connect_timeout_seconds,
                                        sock_read=settings.timeout_seconds)
        data: Any = _request_body(receive) if _has_body(ctx) else None
        started = time.perf_counter()
        try:
            response = await self.session.request(
                ctx.method, self.url_for(ctx, route), headers=headers, data=data,
                allow_redirects=False, timeout=timeout, compress=None,
            )
        except ClientDisconnected:
            raise
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(detail=f"{route.settings.upstream}: {type(exc).__name__}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(detail=f"{route.settings.upstream}: {type(exc).__name__}: {exc}") from None

        ctx.upstream_status = response.status
        ctx.upstream_latency_ms = round((time.perf_counter() - started) * 1000, 3)
        async with response:
            out_headers = response_headers(list(response.raw_headers))
            out_headers += [(k.lower().encode("latin-1"), v.encode("latin-1"))
                            for k, v in extra_response_headers.items()]
            # A response with no body is complete, for the client, at its headers.
            if ctx.method == "HEAD" or response.status in (204, 304) or response.content_length == 0:
                if before_last_chunk is not None:
                    before_last_chunk(response.status)
                await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
                await send({"type": "http.response.body", "body": b""})
                return response.status
            await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
            # One chunk is held back, so the hook runs before the client has the whole body.
            held = b""
            try:
                async for chunk in response.content.iter_chunked(CHUNK):
                    if held:
                        await send({"type": "http.response.body", "body": held, "more_body": True})
                    held = chunk
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise UpstreamResponseFailed(f"{type(exc).__name__}: {exc}") from None
            if before_last_chunk is not None:
                before_last_chunk(response.status)
            await send({"type": "http.response.body", "body": held})
        return response.status
