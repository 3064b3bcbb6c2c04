"""Raw HTTP/1.1 over a socket, for edge tests: bytes go out exactly as written (no client library
to normalise names, merge slashes or re-encode values), and a recording upstream answers each
request with the exact bytes of the request head it received.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> bytes | None:
        wanted = name.lower().encode()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    def all(self, name: str) -> list[bytes]:
        wanted = name.lower().encode()
        return [v for k, v in self.headers if k.lower() == wanted]

    def upstream_head(self) -> "RecordedHead":
        """What the recording upstream received (its answer's body)."""
        return RecordedHead.parse(self.body)


@dataclass
class RecordedHead:
    request_line: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: bytes) -> "RecordedHead":
        lines = raw.split(b"\r\n")
        head = cls(lines[0])
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                head.headers.append((name, value.strip()))
        return head

    @property
    def target(self) -> bytes:
        return self.request_line.split(b" ")[1]

    @property
    def method(self) -> bytes:
        return self.request_line.split(b" ")[0]

    def names(self) -> set[str]:
        return {k.decode("latin-1").lower() for k, _ in self.headers}

    def get(self, name: str) -> bytes | None:
        wanted = name.lower().encode()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


def _read_response(sock: socket.socket) -> RawResponse:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    length = next((int(v) for k, v in headers if k.lower() == b"content-length"), None)
    chunked = any(k.lower() == b"transfer-encoding" and b"chunked" in v.lower() for k, v in headers)
    body = rest
    if length is not None:
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        body = body[:length]
    elif chunked:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        body = _dechunk(body)
    return RawResponse(status, headers, body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def send_raw(port: int, request: bytes, host: str = "127.0.0.1", source: str | None = None,
             timeout: float = 10.0) -> RawResponse:
    """Send `request` exactly as given and read one response."""
    with socket.create_connection((host, port), timeout=timeout,
                                  source_address=(source, 0) if source else None) as sock:
        sock.sendall(request)
        return _read_response(sock)


def request_bytes(method: str, target: str, headers: list[tuple[str, str]] | list[tuple[bytes, bytes]],
                  host: str = "proxy.test") -> bytes:
    """A request head written byte for byte (names and values as given, str values as latin-1)."""
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1"), b"Host: " + host.encode("latin-1")]
    for name, value in headers:
        n = name if isinstance(name, bytes) else name.encode("latin-1")
        v = value if isinstance(value, bytes) else value.encode("latin-1")
        lines.append(n + b": " + v)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


class RecordingUpstream:
    """A raw upstream: answers every request with 200 and the request head it received as body;
    `response_headers` are added to each answer (e.g. to test what the proxy withholds)."""

    def __init__(self, response_headers: list[tuple[bytes, bytes]] = ()) -> None:
        self.response_headers = list(response_headers)
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                buffer = self._skip_body(conn, head, buffer)
                extra = b"".join(k + b": " + v + b"\r\n" for k, v in self.response_headers)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" + extra
                             + b"Content-Length: " + str(len(head)).encode() + b"\r\n\r\n" + head)

    @staticmethod
    def _skip_body(conn: socket.socket, head: bytes, buffer: bytes) -> bytes:
        lower = head.lower()
        if b"\r\ncontent-length:" in lower:
            length = int(lower.split(b"\r\ncontent-length:")[1].split(b"\r\n")[0])
            while len(buffer) < length:
                buffer += conn.recv(65536)
            return buffer[length:]
        if b"transfer-encoding: chunked" in lower:
            while b"0\r\n\r\n" not in buffer:
                buffer += conn.recv(65536)
            return buffer.split(b"0\r\n\r\n", 1)[1]
        return buffer

    def close(self) -> None:
        self._closed = True
        self._sock.close()
