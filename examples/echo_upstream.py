"""An example upstream that echoes the request it received (method, path, headers, body digest) as JSON.

Test helpers on any path: `?_download=N` streams N bytes back, `?_sleep=S` waits S seconds first,
`?_status=N` answers with status N.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib

from aiohttp import web

CHUNK = b"x" * 65536


async def echo(request: web.Request) -> web.StreamResponse:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        digest.update(chunk)
        size += len(chunk)
    sleep = float(request.query.get("_sleep", "0"))
    if sleep:
        await asyncio.sleep(sleep)
    download = int(request.query.get("_download", "0"))
    if download:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                               "Content-Length": str(download)})
        await response.prepare(request)
        remaining = download
        while remaining > 0:
            piece = CHUNK[:min(remaining, len(CHUNK))]
            await response.write(piece)
            remaining -= len(piece)
        await response.write_eof()
        return response
    return web.json_response({
        "method": request.method,
        "path": request.path_qs,
        "headers": {k: v for k, v in request.headers.items()},
        "header_list": [[k, v] for k, v in request.headers.items()],
        "body": {"bytes": size, "sha256": digest.hexdigest()},
        "peer": request.remote,
    }, status=int(request.query.get("_status", "200")))


def make_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
