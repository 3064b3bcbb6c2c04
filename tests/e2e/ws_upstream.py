"""A real websocket upstream (the `websockets` library's asyncio server) for tests/e2e/test_websockets.py.

    /ws/echo      echoes every message as it came (text or bytes)
    /ws/headers   first sends the handshake's request headers as JSON, then echoes
    /ws/slow      reads nothing for SLOW_SECONDS, then echoes (a slow reader, for back-pressure)
    /ws/close     closes with code 4000 after the first message

Usage: python tests/e2e/ws_upstream.py --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import json

from websockets.asyncio.server import ServerConnection, serve

SLOW_SECONDS = 3.0


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path.split("?")[0]
    if path.endswith("/headers"):
        await ws.send(json.dumps({k.lower(): v for k, v in ws.request.headers.raw_items()}))
    if path.endswith("/slow"):
        await asyncio.sleep(SLOW_SECONDS)
    async for message in ws:
        if path.endswith("/close"):
            await ws.close(4000, "upstream done")
            return
        await ws.send(message)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, max_size=None, max_queue=4):
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
