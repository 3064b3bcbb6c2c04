"""Helpers for the proxy's own outbound HTTP calls (JWKS, discovery, introspection, token endpoints)."""

from __future__ import annotations

import aiohttp


class ResponseTooLarge(ValueError):
    pass


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes. (`content.read(n)` may return any prefix.)"""
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(f"{response.url}: response larger than {limit} bytes")
    return bytes(body)
