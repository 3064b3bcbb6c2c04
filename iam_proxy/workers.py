"""Worker processes: `listeners.workers` copies of the proxy, one event loop each, on one port.

Python runs one request at a time per process, so a proxy that should use every core needs one
process per core. The parent binds one SO_REUSEPORT socket per worker before forking, for the proxy
listener and for Envoy's HTTP-mode ext_authz listener (a port that is taken fails here, before
anything starts), and the kernel spreads new connections evenly across those sockets. The gRPC
ext_authz server binds its own port, so the parent only checks that nothing holds it; each worker's
server then joins the others on it with SO_REUSEPORT.

Each worker builds its own Proxy after the fork: its own policy engine, upstream pool,
and its own audit journal (spool and files, see audit/journal.py), so no two processes ever write
one file. Without `assertion.key_file`, the ephemeral assertion key is made before the fork, so
every worker signs with the key the JWKS publishes. The tables of verified bearer tokens and of
policy decisions are mapped before the fork too (core/shared_cache.py), so a caller's token is
verified, and a decision evaluated, once for the service whichever worker takes the request.

Only worker 0 serves the admin listener; the others serve the admin app on Unix sockets in a private
directory made before the fork, which worker 0 asks so that `/readyz` and `/metrics` cover every
worker (ops/workerset.py). The audit metrics cover every worker through a table in memory shared
before the fork (audit/metrics.py).

The parent only supervises: SIGTERM and SIGINT are passed to every worker; when a worker dies on its
own, the others are stopped and the parent exits non-zero so that the service manager restarts the
whole set rather than running with fewer workers than configured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator

from .audit.metrics import Board
from .authn.bearer_jwt import TOKENS_TABLE, VERIFIED_TOKEN_BYTES
from .core import shared_cache
from .core.errors import ConfigError
from .forward.assertion import ephemeral_key
from .policy.cache import DECISION_BYTES, DECISIONS_TABLE
from .settings import Settings
from .settings.authn import JWTAuthenticatorSettings
from .settings.listeners import Listener

log = logging.getLogger("iam_proxy.workers")


@dataclass(frozen=True)
class WorkerSockets:
    """One worker's pre-bound listening sockets."""

    proxy: socket.socket
    ext_authz_http: socket.socket | None = None

    def all(self) -> list[socket.socket]:
        return [sock for sock in (self.proxy, self.ext_authz_http) if sock is not None]


# settings, sockets, worker number, board, directory of the workers' admin sockets
ServeOne = Callable[[Settings, WorkerSockets, int, Board, str], None]


def _forward(children: dict[int, int], signum: int) -> None:
    for child in children:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass


def reuseport_socket(listener: Listener) -> socket.socket:
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((listener.host, listener.port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def check_port_free(listener: Listener) -> None:
    """Fails (OSError) if anything listens on the listener's port, even with SO_REUSEPORT."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listener.host, listener.port))


@contextlib.contextmanager
def _binding(key: str, listener: Listener) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise ConfigError(f"{key}: cannot listen on {listener.host}:{listener.port} ({exc.strerror})") from None


def _bind_all(settings: Settings) -> list[WorkerSockets]:
    """Every worker's sockets, bound before any worker starts; a taken port is a ConfigError."""
    ext_authz = settings.ext_authz
    if ext_authz.grpc is not None:
        with _binding("ext_authz.grpc.port", ext_authz.grpc):
            check_port_free(ext_authz.grpc)
    sockets = []
    for _ in range(settings.listeners.workers):
        with _binding("listeners.proxy.port", settings.listeners.proxy):
            proxy = reuseport_socket(settings.listeners.proxy)
        http = None
        if ext_authz.http is not None:
            with _binding("ext_authz.http.port", ext_authz.http):
                http = reuseport_socket(ext_authz.http)
        sockets.append(WorkerSockets(proxy, http))
    return sockets


def run_workers(settings: Settings, serve_one: ServeOne) -> int:
    """Fork the workers and supervise them; returns the exit code for the parent."""
    count = settings.listeners.workers
    sockets = _bind_all(settings)
    if settings.identity_headers.assertion.key_file is None:
        ephemeral_key(settings.identity_headers.assertion.algorithm)  # made here: every worker has the one key
    _prepare_shared_caches(settings)
    board = Board(count, shared=True)
    control_dir = tempfile.mkdtemp(prefix="iam-proxy-workers-")
    try:
        return _supervise(settings, serve_one, sockets, board, control_dir)
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)


def _prepare_shared_caches(settings: Settings) -> None:
    """Sized by the configuration at start: a reload keeps the tables (and their size)."""
    shared_cache.prepare(DECISIONS_TABLE, settings.policy.cache.max_entries, DECISION_BYTES)
    tokens = sum(a.cache_entries for a in settings.authenticators.values() if isinstance(a, JWTAuthenticatorSettings))
    if tokens:
        shared_cache.prepare(TOKENS_TABLE, tokens, VERIFIED_TOKEN_BYTES)


def _supervise(settings: Settings, serve_one: ServeOne, sockets: list[WorkerSockets], board: Board,
               control_dir: str) -> int:
    children: dict[int, int] = {}
    for index, own in enumerate(sockets):
        pid = os.fork()
        if pid == 0:
            for other in sockets:
                if other is not own:
                    for sock in other.all():
                        sock.close()
            code = 0
            try:
                serve_one(settings, own, index, board, control_dir)
            except BaseException:  # noqa: BLE001 - the worker's failure is reported by its exit code
                log.exception("worker %d failed", index)
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        children[pid] = index
    for own in sockets:
        for sock in own.all():
            sock.close()

    stopping = False

    def stop(signum: int, _frame) -> None:
        nonlocal stopping
        stopping = True
        _forward(children, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda signum, _frame: _forward(children, signum))  # reload: each worker
    exit_code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if not stopping:
            log.error("worker %d exited with %d; stopping the other workers", index, code)
            exit_code = 1
            stop(signal.SIGTERM, None)
        elif code not in (0, -signal.SIGTERM, -signal.SIGINT):
            exit_code = 1
    return exit_code
