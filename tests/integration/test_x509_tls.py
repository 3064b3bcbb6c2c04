"""Client certificates on the proxy's own TLS listener, with real TLS clients (Python ssl, curl,
openssl s_client): good, expired, untrusted, wrong-EKU, EKU-less and revoked certificates; a route that
takes a certificate or a bearer token; the certificate in the policy input; reload without restart.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import yaml
from cryptography import x509

from support import DevIssuer, ProxyProcess, audit_event, base_config, copy_policies, run_cli, upstream_headers
from x509_pki import CERT_POLICY, CLIENT, PKI, SERVER

pytestmark = pytest.mark.peer("openssl")


def tls_config(pki: PKI, upstream: str, issuer: DevIssuer, tmp: Path, policy_dir: Path) -> dict:
    config = base_config(upstream, issuer.jwks_path, tmp / "audit.jsonl", policy_dir)
    config["listeners"]["proxy"]["tls"] = {
        "cert_file": str(pki.server.cert_path), "key_file": str(pki.server.key_path),
        "client_auth": "optional", "client_ca_file": str(pki.ca.path), "crl_file": str(pki.crl_path),
        "reload_interval_seconds": 0.2,
    }
    config["authenticators"]["mtls"] = {"type": "x509", "ou_as_groups": True}
    # the same handshake certificates, verified again against a narrower (or the same) CA bundle
    config["authenticators"]["mtls_other_ca"] = {"type": "x509", "ca_file": str(pki.other_ca.path)}
    config["authenticators"]["mtls_pinned"] = {"type": "x509", "ca_file": str(pki.ca.path),
                                               "crl_file": str(pki.crl_path)}
    config["routes"] = [
        {"id": "api", "match": {"path": "/api/**"}, "upstream": upstream, "authenticators": ["mtls"]},
        {"id": "either", "match": {"path": "/either/**"}, "upstream": upstream,
         "authenticators": ["mtls", "bearer"], "labels": {"access": "public"}},
        {"id": "certinfo", "match": {"path": "/certinfo/**"}, "upstream": upstream,
         "authenticators": ["mtls", "bearer"], "policy": {"path": "x509test/decision"}},
        {"id": "other-ca", "match": {"path": "/other-ca/**"}, "upstream": upstream,
         "authenticators": ["mtls_other_ca"], "labels": {"access": "public"}},
        {"id": "pinned", "match": {"path": "/pinned/**"}, "upstream": upstream,
         "authenticators": ["mtls_pinned"], "labels": {"access": "public"}},
    ]
    return config


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_proxy(pki, upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("x509-tls")
    policy_dir = copy_policies(tmp / "policies", {"x509test/x509test.rego": CERT_POLICY})
    issuer = DevIssuer(tmp / "issuer")
    proxy = ProxyProcess(tls_config(pki, upstream, issuer, tmp, policy_dir), tmp).wait_ready()
    proxy.issuer = issuer
    proxy.url = f"https://127.0.0.1:{proxy.port}"
    yield proxy
    proxy.stop()


def client_context(pki: PKI, cert=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.path))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    return ctx


def get(proxy, pki, path: str, cert=None, **kw) -> httpx.Response:
    with httpx.Client(base_url=proxy.url, verify=client_context(pki, cert), timeout=10) as c:
        return c.get(path, **kw)


def curl(proxy, pki, path: str, cert=None) -> subprocess.CompletedProcess[str]:
    argv = ["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca.path), "-o", "-", "-w", "\n%{http_code}"]
    if cert is not None:
        argv += ["--cert", str(cert.cert_path), "--key", str(cert.key_path)]
    return subprocess.run(argv + [proxy.url + path], capture_output=True, text=True, timeout=20)


# ---------------------------------------------------------------- good certificates


def test_good_certificate_python_client(tls_proxy, pki):
    r = get(tls_proxy, pki, "/api/invoices/1", pki.good, headers={"X-Request-Id": "x509-good-python"})
    assert r.status_code == 200, r.text
    headers = upstream_headers(r)
    assert headers["x-forwarded-user"] == "alice@example.org"  # default rule: email SAN
    assert headers["x-forwarded-groups"] == "finance"          # OU -> group (ou_as_groups)
    assert headers["x-forwarded-preferred-username"] == "alice"
    event = audit_event(tls_proxy, "x509-good-python")
    assert event["identity"]["method"] == "x509"


def test_good_certificate_curl(tls_proxy, pki):
    result = curl(tls_proxy, pki, "/api/invoices/2", pki.good)
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200", result.stderr
    assert '"x-forwarded-user": "alice@example.org"' in body.replace("'", '"') or "alice@example.org" in body


def test_spiffe_id_becomes_the_subject(tls_proxy, pki):
    r = get(tls_proxy, pki, "/either/whoami", pki.spiffe)
    assert r.status_code == 200, r.text
    assert upstream_headers(r)["x-forwarded-user"] == "spiffe://example.org/ns/acme/sa/billing"


def test_policy_sees_source_certificate_and_identity_cert(tls_proxy, pki):
    r = get(tls_proxy, pki, "/certinfo/x", pki.good)
    assert r.status_code == 200, r.text
    headers = upstream_headers(r)
    assert headers["x-policy-source-certificate"] == pki.good.escaped_pem
    assert unquote(headers["x-policy-source-certificate"]) == pki.good.pem
    assert headers["x-policy-cert-subject"] == pki.good.cert.subject.rfc4514_string()


def test_policy_input_without_certificate_has_no_source_certificate(tls_proxy, pki):
    token = tls_proxy.issuer.token("alice")
    r = get(tls_proxy, pki, "/certinfo/x", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert r.json()["reasons"] == ["no client certificate in the input"]


# ---------------------------------------------------------------- chained: certificate or bearer


def test_either_route_takes_a_bearer_token_without_certificate(tls_proxy, pki):
    token = tls_proxy.issuer.token("carol")
    r = get(tls_proxy, pki, "/either/hello", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert upstream_headers(r)["x-forwarded-user"] == "carol"


def test_either_route_prefers_the_certificate_listed_first(tls_proxy, pki):
    token = tls_proxy.issuer.token("carol")
    r = get(tls_proxy, pki, "/either/hello", pki.good, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert upstream_headers(r)["x-forwarded-user"] == "alice@example.org"


def test_either_route_without_any_credential_is_401(tls_proxy, pki):
    r = get(tls_proxy, pki, "/either/hello")
    assert r.status_code == 401
    assert r.json()["reason"] == "credential_missing"
    assert r.headers["www-authenticate"].startswith("Bearer ")


def test_certificate_route_without_certificate_is_401(tls_proxy, pki):
    r = get(tls_proxy, pki, "/api/invoices/1")
    assert r.status_code == 401
    assert r.json()["reason"] == "credential_missing"


def test_route_can_trust_fewer_cas_than_the_listener(tls_proxy, pki):
    assert get(tls_proxy, pki, "/pinned/x", pki.good).status_code == 200
    r = get(tls_proxy, pki, "/other-ca/x", pki.good)
    assert r.status_code == 401
    assert r.json()["reason"] == "certificate_untrusted"


def test_repeated_requests_use_the_verified_certificate(tls_proxy, pki):
    with httpx.Client(base_url=tls_proxy.url, verify=client_context(pki, pki.spiffe), timeout=10) as c:
        users = {upstream_headers(c.get(f"/pinned/{i}"))["x-forwarded-user"] for i in range(5)}
    assert users == {"spiffe://example.org/ns/acme/sa/billing"}


# ---------------------------------------------------------------- bad certificates


@pytest.mark.parametrize("name", ["expired", "untrusted", "revoked", "wrong_eku"])
def test_bad_certificate_fails_the_handshake_python(tls_proxy, pki, name):
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        get(tls_proxy, pki, "/api/invoices/1", getattr(pki, name))


# asyncio and uvloop abort a failed handshake without flushing OpenSSL's alert, so clients see the
# connection closed rather than the alert's name; what matters is that no HTTP exchange happens.
@pytest.mark.parametrize("name", ["expired", "untrusted", "revoked", "wrong_eku"])
def test_bad_certificate_fails_the_handshake_curl(tls_proxy, pki, name):
    result = curl(tls_proxy, pki, "/api/invoices/1", getattr(pki, name))
    assert result.returncode in (35, 52, 56), result.stderr
    assert result.stdout.endswith("000")


def test_revoked_certificate_openssl_s_client(tls_proxy, pki):
    request = b"GET /api/invoices/1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{tls_proxy.port}", "-CAfile", str(pki.ca.path),
            "-quiet"]
    good = subprocess.run(argv + ["-cert", str(pki.good.cert_path), "-key", str(pki.good.key_path)],
                          input=request, capture_output=True, timeout=20)
    assert b"HTTP/1.1 200" in good.stdout
    revoked = subprocess.run(argv + ["-cert", str(pki.revoked.cert_path), "-key", str(pki.revoked.key_path)],
                             input=request, capture_output=True, timeout=20)
    assert b"HTTP/1.1" not in revoked.stdout
    assert any(m in revoked.stderr for m in (b"errno=104", b"unexpected eof", b"alert")), revoked.stderr


def test_certificate_without_client_auth_eku_is_401(tls_proxy, pki):
    # OpenSSL accepts a leaf with no EKU at all; the authenticator insists on clientAuth.
    r = get(tls_proxy, pki, "/api/invoices/1", pki.no_eku)
    assert r.status_code == 401
    assert r.json()["reason"] == "certificate_wrong_usage"


def test_tls_1_1_is_refused(tls_proxy, pki):
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{tls_proxy.port}", "-tls1_1", "-CAfile", str(pki.ca.path)],
        input=b"", capture_output=True, timeout=20)
    assert result.returncode != 0
    assert b"Cipher is (NONE)" in result.stdout or b"no protocols available" in result.stderr


# ---------------------------------------------------------------- reload without restart


def _server_serial(port: int, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def _until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except (httpx.TransportError, ssl.SSLError, OSError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return check()
        time.sleep(0.1)


def test_server_certificate_and_crl_reload_without_restart(upstream, tmp_path):
    pki = PKI.create(tmp_path / "pki")
    policy_dir = tmp_path / "policies"
    copy_policies(policy_dir)
    issuer = DevIssuer(tmp_path / "issuer")
    proxy = ProxyProcess(tls_config(pki, upstream, issuer, tmp_path, policy_dir), tmp_path).wait_ready()
    proxy.url = f"https://127.0.0.1:{proxy.port}"
    try:
        assert get(proxy, pki, "/api/invoices/1", pki.good).status_code == 200
        old_serial = _server_serial(proxy.port, pki.ca.path)

        # rotate the server certificate: key first, then certificate (as a renewal would)
        renewed = pki.ca.issue(tmp_path / "pki", "server-renewed", "localhost", eku=SERVER,
                               dns=("localhost",), ips=("127.0.0.1",))
        shutil.copy(renewed.key_path, pki.server.key_path)
        shutil.copy(renewed.cert_path, pki.server.cert_path)
        assert _until(lambda: _server_serial(proxy.port, pki.ca.path) == renewed.cert.serial_number)
        assert renewed.cert.serial_number != old_serial

        # revoke alice: the next handshake with her certificate fails, another certificate still works
        pki.ca.write_crl(pki.crl_path, [pki.revoked, pki.good])

        def alice_refused() -> bool:
            try:
                get(proxy, pki, "/api/invoices/1", pki.good)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                return True
            return False

        assert _until(alice_refused)
        fresh = pki.ca.issue(tmp_path / "pki", "dave", "dave", eku=CLIENT, emails=("dave@example.org",),
                             ou=("finance",))
        assert get(proxy, pki, "/api/invoices/1", fresh).status_code == 200

        # a new client CA is trusted after the bundle changes, without a restart
        other_client = pki.other_ca.issue(tmp_path / "pki", "erin", "erin", eku=CLIENT,
                                          emails=("erin@example.org",), ou=("finance",))
        pki.ca.path.write_bytes(pki.ca.path.read_bytes() + pki.other_ca.path.read_bytes())
        other_crl = pki.other_ca.write_crl(tmp_path / "pki" / "other.crl.pem")
        pki.crl_path.write_bytes(pki.crl_path.read_bytes() + other_crl.read_bytes())
        assert _until(lambda: get(proxy, pki, "/api/invoices/1", other_client).status_code == 200)
        assert "reloaded" in proxy.process.logs()
    finally:
        proxy.stop()



# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize("change, message", [
    (lambda c: c["listeners"]["proxy"]["tls"].pop("client_ca_file"),
     "listeners.proxy.tls: client_ca_file is required when client_auth is not 'none'"),
    (lambda c: c["authenticators"]["mtls"].update(sources=["xfcc"]),
     "authenticators.mtls: ca_file is required to verify certificates forwarded in headers"),
    (lambda c: c["authenticators"]["mtls"].update(mapping=[{"source": "san_uri", "sub": "{tenant}"}]),
     "authenticators.mtls.mapping[0]: sub: unknown template variable {tenant}"),
    (lambda c: c["authenticators"]["mtls"].update(sources=["smtp"]),
     "authenticators.mtls.sources[0]"),
])
def test_config_errors_name_the_key(pki, upstream, tmp_path, change, message):
    issuer = DevIssuer(tmp_path / "issuer")
    config = tls_config(pki, upstream, issuer, tmp_path, Path(__file__).resolve().parents[2] / "policies")
    change(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
