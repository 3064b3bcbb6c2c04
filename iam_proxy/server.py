"""Run the proxy and admin listeners in one process, on uvloop + httptools (chosen by benchmark)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

import uvicorn

from .app import Proxy
from .audit.metrics import Board
from .core.redaction import install_log_redaction
from .listener.counters import ListenerCounters
from .listener.guard import Guard
from .settings import Settings
from .settings.limits import ListenerLimits
from .settings.listeners import Listener
from .tls import ReloadingServerContext


class _Server(uvicorn.Server):
    """uvicorn.Server without its own signal capture: serve() stops both listeners together."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


def _config(app, name: str, listener: Listener, limits: ListenerLimits, lifespan: str,
            counters: ListenerCounters) -> uvicorn.Config:
    """Listener `name` ("proxy", "admin", "ext_authz_http"). uvicorn is given no SSL context: the
    guard's protocol runs TLS itself, on our own context (client certificates, CRLs, reload: tls.py)."""
    tls = ReloadingServerContext(listener.tls).listening if listener.tls is not None else None
    guard = Guard(name, limits, counters, tls)  # uvicorn's protocol factory: listener/guard.py
    return uvicorn.Config(
        app, host=listener.host, port=listener.port, loop="none", lifespan=lifespan,
        interface="asgi3", http=guard,  # type: ignore[arg-type]
        access_log=False, server_header=False, date_header=True, log_level="warning",
        timeout_keep_alive=30, h11_max_incomplete_event_size=64 * 1024,
        proxy_headers=False,  # X-Forwarded-* are judged by our own trusted_proxies, never by uvicorn
    )


async def serve(settings: Settings, proxy_socket: socket.socket | None = None, worker: int = 0,
                audit_board: Board | None = None) -> None:
    """Serve one process's listeners; a worker gets its pre-bound proxy socket, its number and the
    shared audit metrics table (see workers.py). Worker 0 also serves the admin listener."""
    board = audit_board or Board()  # the listener's counters share it (listener/counters.py)
    proxy = Proxy(settings, worker, board)
    counters = ListenerCounters(board, worker)
    counters.register(proxy.metrics.registry)
    listeners = settings.listeners
    servers = [_Server(_config(proxy.proxy_app, "proxy", listeners.proxy, listeners.limits, "on", counters))]
    if worker == 0:
        servers.append(_Server(_config(proxy.admin_app, "admin", listeners.admin, listeners.limits, "off",
                                       counters)))
    if proxy.extauthz is not None and proxy.extauthz.http_app is not None:  # Envoy's HTTP mode (extauthz/)
        servers.append(_Server(_config(proxy.extauthz.http_app, "ext_authz_http", settings.ext_authz.http,
                                       listeners.limits, "off", counters)))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn.Config gave them their own handlers
        install_log_redaction(logging.getLogger(name))
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
    await asyncio.gather(servers[0].serve(sockets=[proxy_socket] if proxy_socket else None),
                         *(s.serve() for s in servers[1:]))


def _serve_worker(settings: Settings, proxy_socket: socket.socket, worker: int, audit_board: Board) -> None:
    import uvloop

    uvloop.run(serve(settings, proxy_socket, worker, audit_board))


def run(settings: Settings) -> None:
    import uvloop

    if settings.listeners.workers > 1:
        from .workers import run_workers

        code = run_workers(settings, _serve_worker)
        if code:
            raise SystemExit(code)
        return
    uvloop.run(serve(settings))
