"""Run the proxy and admin listeners in one process, on uvloop + httptools (chosen by benchmark)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl

import uvicorn

from .app import Proxy
from .settings import Listener, Settings


class _Server(uvicorn.Server):
    """uvicorn.Server without its own signal capture: serve() stops both listeners together."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


def _config(app, listener: Listener, lifespan: str) -> uvicorn.Config:
    kwargs = {}
    if listener.tls is not None:
        kwargs = {"ssl_certfile": str(listener.tls.cert_file), "ssl_keyfile": str(listener.tls.key_file),
                  "ssl_version": ssl.PROTOCOL_TLS_SERVER}
        if listener.tls.ciphers:
            kwargs["ssl_ciphers"] = listener.tls.ciphers
    return uvicorn.Config(
        app, host=listener.host, port=listener.port, loop="none", http="httptools", lifespan=lifespan,
        interface="asgi3",
        access_log=False, server_header=False, date_header=True, log_level="warning",
        timeout_keep_alive=30, h11_max_incomplete_event_size=64 * 1024,
        proxy_headers=False,  # X-Forwarded-* are judged by our own trusted_proxies, never by uvicorn
        **kwargs,
    )


async def serve(settings: Settings) -> None:
    proxy = Proxy(settings)
    servers = [
        _Server(_config(proxy.proxy_app, settings.listeners.proxy, "on")),
        _Server(_config(proxy.admin_app, settings.listeners.admin, "off")),
    ]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    log = logging.getLogger("iam_proxy")
    log.warning("iam-proxy listening on %s:%d (admin %s:%d), policy revision %s",
                settings.listeners.proxy.host, settings.listeners.proxy.port,
                settings.listeners.admin.host, settings.listeners.admin.port, proxy.engine.revision)
    await asyncio.gather(*(s.serve() for s in servers))


def run(settings: Settings) -> None:
    import uvloop

    uvloop.run(serve(settings))
