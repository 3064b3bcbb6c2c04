"""The ASGI app of bench/stack.py: read the request, forward it with the chosen client, answer.

STACK_CLIENT: "none" (answer at once), "aiohttp", "httpx" or "http1" (iam_proxy/forward/http1.py, the
proxy's own); STACK_UPSTREAM: the upstream URL.
"""

from __future__ import annotations

import os

CLIENT = os.environ.get("STACK_CLIENT", "none")
UPSTREAM = os.environ.get("STACK_UPSTREAM", "http://127.0.0.1:1")
BODY = b'{"ok":true}'
_state: dict = {}


async def _forward(path: str) -> tuple[int, bytes]:
    if CLIENT == "http1":
        from urllib.parse import urlsplit

        from iam_proxy.forward.http1 import Http1Client

        if "http1" not in _state:
            _state["http1"] = Http1Client()
        parts = urlsplit(UPSTREAM)
        response = await _state["http1"].request("GET", "http", parts.hostname, parts.port, path,
                                                 [("host", parts.netloc)], None, connect_timeout=5, read_timeout=30)
        try:
            return response.status, b"".join([chunk async for chunk in response.chunks()])
        finally:
            response.release()
    if CLIENT == "aiohttp":
        import aiohttp

        if "session" not in _state:
            _state["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        async with _state["session"].get(UPSTREAM + path) as response:
            return response.status, await response.read()
    import httpx

    if "client" not in _state:
        _state["client"] = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000))
    response = await _state["client"].get(UPSTREAM + path)
    return response.status_code, response.content


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    while (await receive()).get("more_body"):
        pass
    status, body = (200, BODY) if CLIENT == "none" else await _forward(scope["path"])
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
