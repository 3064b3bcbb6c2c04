"""Run the proxy and admin listeners in one process, on uvloop + httptools (chosen by benchmark)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import socket

import uvicorn

from .audit.metrics import Board
from .core.redaction import install_log_redaction
from .listener.counters import ListenerCounters
from .lifecycle.reload import LiveProxy
from .listener.guard import Guard
from .ops.workerset import WorkerSet, socket_path
from .settings import Settings
from .settings.limits import ListenerLimits
from .settings.listeners import Listener
from .tls import ReloadingServerContext
from .workers import WorkerSockets


class _Server(uvicorn.Server):
    """uvicorn.Server without its own signal capture: serve() stops both listeners together.
    `prebound`: the listening socket a worker was given (workers.py); None: uvicorn binds."""

    def __init__(self, config: uvicorn.Config, prebound: socket.socket | None = None) -> None:
        super().__init__(config)
        self.prebound = [prebound] if prebound is not None else None

    async def serve_listener(self) -> None:
        await self.serve(sockets=self.prebound)

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


def _config(app, name: str, listener: Listener, limits: ListenerLimits, lifespan: str,
            counters: ListenerCounters, grace: float, uds: str | None = None) -> uvicorn.Config:
    """Listener `name` ("proxy", "admin", "ext_authz_http"). uvicorn is given no SSL context: the
    guard's protocol runs TLS itself, on our own context (client certificates, CRLs, reload: tls.py)."""
    tls = ReloadingServerContext(listener.tls).listening if listener.tls is not None and uds is None else None
    guard = Guard(name, limits, counters, tls)  # uvicorn's protocol factory: listener/guard.py
    return uvicorn.Config(
        app, host=listener.host, port=listener.port, loop="none", lifespan=lifespan,
        interface="asgi3", http=guard, uds=uds,  # type: ignore[arg-type]
        access_log=False, server_header=False, date_header=True, log_level="warning",
        timeout_keep_alive=30, h11_max_incomplete_event_size=64 * 1024, timeout_graceful_shutdown=grace,
        proxy_headers=False,  # X-Forwarded-* are judged by our own trusted_proxies, never by uvicorn
    )


async def serve(settings: Settings, sockets: WorkerSockets | None = None, worker: int = 0,
                audit_board: Board | None = None, control_dir: str | None = None,
                config_path: str | None = None) -> None:
    """Serve one process's listeners; a worker gets its pre-bound sockets, its number, the shared
    audit metrics table and the directory of the workers' admin sockets (see workers.py). Worker 0
    serves the admin listener, for every worker (ops/workerset.py); every worker answers ext_authz."""
    board = audit_board or Board()  # the listener's counters share it (listener/counters.py)
    counters = ListenerCounters(board, worker)
    live = LiveProxy(settings, config_path, worker, board, [counters])  # reloads on SIGHUP and file change
    proxy = live.current
    listeners = settings.listeners
    config = functools.partial(_config, limits=listeners.limits, counters=counters,
                               grace=listeners.shutdown_grace_seconds)
    servers = [_Server(config(live.proxy_app, "proxy", listeners.proxy, lifespan="on"),
                       sockets.proxy if sockets is not None else None)]
    if worker == 0:
        servers.append(_Server(config(live.admin_app, "admin", listeners.admin, lifespan="off")))
        if control_dir is not None:
            proxy.peers = WorkerSet(control_dir, listeners.workers)
    elif control_dir is not None:
        servers.append(_Server(config(live.admin_app, "admin", listeners.admin, lifespan="off",
                                      uds=socket_path(control_dir, worker))))
    if proxy.extauthz.http_app is not None:  # Envoy's HTTP mode (extauthz/)
        servers.append(_Server(config(proxy.extauthz.http_app, "ext_authz_http", settings.ext_authz.http,
                                      lifespan="off"), sockets.ext_authz_http if sockets is not None else None))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn.Config gave them their own handlers
        install_log_redaction(logging.getLogger(name))
    loop = asyncio.get_running_loop()

    def stop() -> None:
        # The proxy listener stops accepting and lets in-flight requests finish (up to the grace), then
        # its lifespan flushes the audit spool; the admin listener stays up meanwhile, /readyz saying 503.
        live.draining = live.current.draining = True
        servers[0].should_exit = True

    async def serve_proxy() -> None:
        try:
            await servers[0].serve_listener()
        finally:
            for server in servers[1:]:
                server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(live.reload("SIGHUP")))
    log = logging.getLogger("iam_proxy")
    log.warning("iam-proxy listening on %s:%d (admin %s:%d), policy revision %s",
                settings.listeners.proxy.host, settings.listeners.proxy.port,
                settings.listeners.admin.host, settings.listeners.admin.port, proxy.engine.revision)
    settle_garbage_collector()
    await asyncio.gather(serve_proxy(), *(server.serve_listener() for server in servers[1:]))


# In a 25-second benchmark run a worker ran the collector 800 times (4 of them over every object the
# proxy built at startup, about 114,000), for 3.3 % of its CPU: at Python's default threshold (700)
# the youngest generation fills every few dozen requests.
GC_YOUNGEST_THRESHOLD = 20_000


def settle_garbage_collector() -> None:
    """What the proxy built to serve (settings, compiled routes and policies, libraries' tables) is
    moved out of the collector's sight, and requests' garbage is collected in larger batches."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNGEST_THRESHOLD, older, oldest)


def _serve_worker(settings: Settings, sockets: WorkerSockets, worker: int, audit_board: Board,
                  control_dir: str, config_path: str | None = None) -> None:
    import uvloop

    uvloop.run(serve(settings, sockets, worker, audit_board, control_dir, config_path))


def run(settings: Settings, config_path: str | None = None) -> None:
    """`config_path`: the file to reload on SIGHUP and on change (lifecycle/reload.py)."""
    import uvloop

    if settings.listeners.workers > 1:
        from .workers import run_workers

        code = run_workers(settings, functools.partial(_serve_worker, config_path=config_path))
        if code:
            raise SystemExit(code)
        return
    uvloop.run(serve(settings, config_path=config_path))
