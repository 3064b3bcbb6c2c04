"""Slow and stalled clients on a raw socket: bytes go out exactly as given, at the pace given, and
what comes back is read until the server closes the connection."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass


@dataclass
class Outcome:
    answer: bytes     # everything the server sent before it closed
    sent: int         # bytes of the request that went out before the server closed
    seconds: float    # from the first byte sent to the close

    @property
    def status(self) -> int | None:
        return int(self.answer.split(b" ", 2)[1]) if self.answer.startswith(b"HTTP/1.1 ") else None


def connect(port: int, host: str = "127.0.0.1", source: str | None = None, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout, source_address=(source, 0) if source else None)


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """All the server sends until it closes; raises TimeoutError if it keeps the connection open."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def trickle(port: int, request: bytes, every: float, chunk: int = 1, then_wait: float = 10.0,
            host: str = "127.0.0.1") -> Outcome:
    """Send `request` `chunk` bytes at a time, one send per `every` seconds, stopping as soon as the
    server closes; then read until it closes (at most `then_wait` seconds)."""
    with connect(port, host) as sock:
        started = time.monotonic()
        sent = 0
        sock.setblocking(False)
        answer = b""
        while sent < len(request):
            try:
                sent += sock.send(request[sent:sent + chunk])
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(every)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                break
            answer += data
            break  # the server answered or closed: stop sending
        sock.setblocking(True)
        answer += read_until_closed(sock, then_wait)
        return Outcome(answer, sent, time.monotonic() - started)


def stall(port: int, request: bytes, host: str = "127.0.0.1", wait: float = 10.0) -> Outcome:
    """Send `request` at once, then nothing more; read until the server closes."""
    with connect(port, host) as sock:
        started = time.monotonic()
        sock.sendall(request)
        answer = read_until_closed(sock, wait)
        return Outcome(answer, len(request), time.monotonic() - started)
