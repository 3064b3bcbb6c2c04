"""Worker processes: `listeners.workers` copies of the proxy, one event loop each, on one port.

Python runs one request at a time per process, so a proxy that should use every core needs one
process per core. The parent binds one SO_REUSEPORT socket per worker before forking (a port that
is taken fails here, before anything starts), and the kernel spreads new connections evenly across
those sockets. Each worker builds its own Proxy after the fork: its own policy engine, token cache,
upstream pool, and its own audit journal (spool and files, see audit/journal.py), so no two
processes ever write one file.

Only worker 0 serves the admin listener; the others serve the admin app on Unix sockets in a private
directory made before the fork, which worker 0 asks so that `/readyz` and `/metrics` cover every
worker (ops/workerset.py). The audit metrics cover every worker through a table in memory shared
before the fork (audit/metrics.py).

The parent only supervises: SIGTERM and SIGINT are passed to every worker; when a worker dies on its
own, the others are stopped and the parent exits non-zero so that the service manager restarts the
whole set rather than running with fewer workers than configured.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Callable

from .audit.metrics import Board
from .settings import Settings
from .settings.listeners import Listener

log = logging.getLogger("iam_proxy.workers")

# settings, socket, worker number, board, directory of the workers' admin sockets
ServeOne = Callable[[Settings, socket.socket, int, Board, str], None]


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


def run_workers(settings: Settings, serve_one: ServeOne) -> int:
    """Fork the workers and supervise them; returns the exit code for the parent."""
    count = settings.listeners.workers
    sockets = [reuseport_socket(settings.listeners.proxy) for _ in range(count)]
    board = Board(count, shared=True)
    control_dir = tempfile.mkdtemp(prefix="iam-proxy-workers-")
    try:
        return _supervise(settings, serve_one, sockets, board, control_dir)
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)


def _supervise(settings: Settings, serve_one: ServeOne, sockets: list[socket.socket], board: Board,
               control_dir: str) -> int:
    children: dict[int, int] = {}
    for index, sock in enumerate(sockets):
        pid = os.fork()
        if pid == 0:
            for other in sockets:
                if other is not sock:
                    other.close()
            code = 0
            try:
                serve_one(settings, sock, index, board, control_dir)
            except BaseException:  # noqa: BLE001 - the worker's failure is reported by its exit code
                log.exception("worker %d failed", index)
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        children[pid] = index
    for sock in sockets:
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
