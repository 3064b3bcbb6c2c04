"""Connections to the directory servers: our own TLS verification, each server's slot (skipped for a
while after a failure), and a bounded pool of idle connections."""

from __future__ import annotations

import queue
import ssl
import time
from dataclasses import dataclass
from typing import Callable

from ldap3 import Connection, Server, Tls
from ldap3.core.exceptions import LDAPException

MAX_CONNECTION_AGE_SECONDS = 300.0  # pooled connections are renewed, so a recovered primary gets used again


class VerifiedTls(Tls):
    """ldap3's Tls, but wrapping sockets with our own context: Python verifies the chain and the host
    name (IP SANs included, on every Python version), TLS 1.2 at least, and SNI is sent."""

    def __init__(self, context: ssl.SSLContext, server_hostname: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context
        self._server_hostname = server_hostname

    def wrap_socket(self, connection, do_handshake=False):  # noqa: ANN001 - ldap3's signature
        connection.socket = self._context.wrap_socket(connection.socket, server_side=False,
                                                      do_handshake_on_connect=do_handshake,
                                                      server_hostname=self._server_hostname)


@dataclass
class ServerSlot:
    url: str
    server: Server
    start_tls: bool
    down_until: float = 0.0


@dataclass
class PooledConnection:
    connection: Connection
    slot: ServerSlot
    opened_at: float


class ConnectionPool:
    """Idle connections of one kind (search or bind); at most `size` are kept."""

    def __init__(self, size: int, connect: Callable[[], PooledConnection]) -> None:
        self._idle: queue.LifoQueue[PooledConnection] = queue.LifoQueue(maxsize=size)
        self._connect = connect

    def take(self) -> PooledConnection:
        while True:
            try:
                pooled = self._idle.get_nowait()
            except queue.Empty:
                return self._connect()
            if time.monotonic() - pooled.opened_at < MAX_CONNECTION_AGE_SECONDS and not pooled.connection.closed:
                return pooled
            close_quietly(pooled.connection)

    def fresh(self) -> PooledConnection:
        return self._connect()

    def give_back(self, pooled: PooledConnection) -> None:
        try:
            self._idle.put_nowait(pooled)
        except queue.Full:
            close_quietly(pooled.connection)

    def close(self) -> None:
        while True:
            try:
                close_quietly(self._idle.get_nowait().connection)
            except queue.Empty:
                return


def close_quietly(connection: Connection) -> None:
    try:
        connection.unbind()
    except (LDAPException, OSError):
        pass
