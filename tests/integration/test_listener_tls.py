"""Failed TLS handshakes on the proxy's TLS listener (issue 13 item 9): every one is counted in
/metrics by reason and logged with the peer's address, with real TLS clients (Python ssl, openssl
s_client) and certificates that are expired, untrusted, revoked, for the wrong usage, or missing; a
client that is not speaking TLS, one that stalls its handshake, and one offering TLS 1.1. The
listener's header deadline and its connection limit hold behind TLS too.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time

import pytest

from rawconn import read_until_closed
from rawhttp import request_bytes
from support import DevIssuer, ProxyProcess, base_config, copy_policies
from x509_pki import PKI

pytestmark = pytest.mark.peer("openssl")

FAILURES = "iam_proxy_tls_handshake_failures_total"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_proxy(pki, upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("listener-tls")
    issuer = DevIssuer(tmp / "issuer")
    config = base_config(upstream, issuer.jwks_path, tmp / "audit.jsonl", copy_policies(tmp / "policies"))
    config["listeners"]["proxy"]["tls"] = {
        "cert_file": str(pki.server.cert_path), "key_file": str(pki.server.key_path),
        "client_auth": "required", "client_ca_file": str(pki.ca.path), "crl_file": str(pki.crl_path),
    }
    config["listeners"]["limits"] = {"header_timeout_seconds": 1, "max_connections_per_client": 4}
    config["authenticators"]["mtls"] = {"type": "x509"}
    config["routes"] = [{"id": "public", "match": {"path": "/public/**"}, "upstream": upstream,
                         "authenticators": ["mtls"], "labels": {"access": "public"}}]
    proxy = ProxyProcess(config, tmp).wait_ready()
    yield proxy
    proxy.stop()


def failures(proxy, reason: str) -> float:
    return proxy.metric(FAILURES, f'listener="proxy",reason="{reason}"')


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def tls_exchange(proxy, pki: PKI, cert=None) -> tuple[int, bytes]:
    """A TLS connection with `cert` (or none) and one request: (the client's port, what came back).
    With TLS 1.3 the server judges the client certificate after the client's handshake is done, so
    the refusal may only show when the client reads."""
    ctx = ssl.create_default_context(cafile=str(pki.ca.path))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    port = raw.getsockname()[1]
    try:
        with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(request_bytes("GET", "/public/hello", []))
            return port, sock.recv(65536)
    except (ssl.SSLError, ConnectionError):
        return port, b""
    finally:
        raw.close()


@pytest.mark.parametrize("name, reason", [
    ("expired", "certificate_expired"), ("untrusted", "certificate_untrusted"), ("revoked", "certificate_revoked"),
    ("wrong_eku", "certificate_wrong_usage"), (None, "certificate_missing"),
])
def test_a_failed_client_certificate_handshake_is_counted_and_logged(tls_proxy, pki, name, reason):
    before = failures(tls_proxy, reason)
    port, answer = tls_exchange(tls_proxy, pki, getattr(pki, name) if name else None)
    assert answer == b""  # no HTTP exchange happened
    assert wait_for(lambda: failures(tls_proxy, reason) == before + 1)
    assert wait_for(lambda: f"TLS handshake with 127.0.0.1:{port} failed: {reason}" in tls_proxy.process.logs())


def test_a_good_certificate_is_served_and_not_counted(tls_proxy, pki):
    before = sum(failures(tls_proxy, r) for r in ("certificate_expired", "certificate_untrusted", "closed", "other"))
    _, answer = tls_exchange(tls_proxy, pki, pki.good)
    assert answer.startswith(b"HTTP/1.1 200 ")
    time.sleep(0.2)
    assert sum(failures(tls_proxy, r) for r in ("certificate_expired", "certificate_untrusted", "closed",
                                                 "other")) == before


def test_plain_http_on_the_tls_port_is_counted(tls_proxy):
    before = failures(tls_proxy, "not_tls")
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5) as sock:
        port = sock.getsockname()[1]
        sock.sendall(request_bytes("GET", "/public/hello", []))
        assert not read_until_closed(sock, timeout=5).startswith(b"HTTP/1.1 200")
    assert wait_for(lambda: failures(tls_proxy, "not_tls") == before + 1)
    assert wait_for(lambda: f"TLS handshake with 127.0.0.1:{port} failed: not_tls" in tls_proxy.process.logs())


def test_a_stalled_handshake_is_cut_at_the_header_deadline(tls_proxy):
    before = failures(tls_proxy, "timeout")
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and then nothing
        assert read_until_closed(sock, timeout=5) == b""
        assert 0.9 < time.monotonic() - started < 2.5
    assert wait_for(lambda: failures(tls_proxy, "timeout") == before + 1)


def test_tls_1_1_is_counted_as_a_protocol_version_failure(tls_proxy, pki):
    before = failures(tls_proxy, "protocol_version")
    subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_proxy.port}", "-tls1_1",
                    "-CAfile", str(pki.ca.path)], input=b"", capture_output=True, timeout=20)
    assert wait_for(lambda: failures(tls_proxy, "protocol_version") == before + 1)


def test_the_header_deadline_holds_behind_tls(tls_proxy, pki):
    ctx = ssl.create_default_context(cafile=str(pki.ca.path))
    ctx.load_cert_chain(str(pki.good.cert_path), str(pki.good.key_path))
    head = request_bytes("GET", "/public/hello", [("User-Agent", "z" * 100)])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5),
                         server_hostname="localhost") as sock:
        started = time.monotonic()
        try:
            for byte in head:  # a byte every 50 ms: 6 s for the head, the deadline is 1 s
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
                if time.monotonic() - started > 1.5:
                    break
        except (ssl.SSLError, ConnectionError):
            pass
        answer = read_until_closed(sock, timeout=5)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert tls_proxy.metric("iam_proxy_listener_refusals_total", 'listener="proxy",reason="header_timeout"') >= 1


def test_over_the_connection_limit_a_tls_client_is_closed_before_the_handshake(tls_proxy):
    before = tls_proxy.metric("iam_proxy_listener_refusals_total", 'listener="proxy",reason="connection_limit"')
    held = [socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=5) as fifth:
            started = time.monotonic()
            assert read_until_closed(fifth, timeout=5) == b""
            assert time.monotonic() - started < 0.5  # not the handshake deadline: refused at once
    finally:
        for sock in held:
            sock.close()
    assert wait_for(lambda: tls_proxy.metric("iam_proxy_listener_refusals_total",
                                             'listener="proxy",reason="connection_limit"') == before + 1)
