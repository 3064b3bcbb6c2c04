"""Client certificates forwarded by a trusted front proxy: real nginx terminating mTLS and sending
`ssl-client-cert`, Envoy-style `X-Forwarded-Client-Cert` from a trusted address, and the same headers
forged by an untrusted peer. The front proxies connect from 127.0.0.3, the only trusted address.
"""

from __future__ import annotations

import json
import subprocess
from urllib.parse import quote

import httpx
import pytest
import yaml

from peers.nginx import start_nginx
from snippets import snippet
from support import DevIssuer, ProxyProcess, audit_event, base_config, copy_policies, free_port
from x509_pki import CERT_POLICY, PKI

pytestmark = pytest.mark.peer("nginx")

TRUSTED = "127.0.0.3"

NGINX_SERVERS = """
    ssl_certificate {server_cert};
    ssl_certificate_key {server_key};
    ssl_protocols TLSv1.2 TLSv1.3;

    # nginx asks for a certificate but leaves all checking to iam-proxy (which must re-validate)
    server {{
        listen 127.0.0.1:{lenient_port} ssl;
        ssl_verify_client optional_no_ca;
        location / {{
            proxy_pass http://127.0.0.1:{proxy_port};
            proxy_bind {trusted};
            proxy_set_header ssl-client-cert $ssl_client_escaped_cert;
        }}
    }}

    # the usual deployment: nginx verifies too (CA and CRL), iam-proxy checks again
    server {{
        listen 127.0.0.1:{strict_port} ssl;
        ssl_verify_client on;
        ssl_client_certificate {ca};
        ssl_crl {crl};
        location / {{
            proxy_pass http://127.0.0.1:{proxy_port};
            proxy_bind {trusted};
            proxy_set_header ssl-client-cert $ssl_client_escaped_cert;
        }}
    }}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI.create(tmp_path_factory.mktemp("front-pki"))


@pytest.fixture(scope="module")
def front(pki, upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("x509-front")
    policy_dir = copy_policies(tmp / "policies", {"x509test/x509test.rego": CERT_POLICY})
    issuer = DevIssuer(tmp / "issuer")
    config = base_config(upstream, issuer.jwks_path, tmp / "audit.jsonl", policy_dir)
    config["listeners"]["trusted_proxies"] = [f"{TRUSTED}/32"]
    config["authenticators"]["forwarded"] = {
        "type": "x509", "sources": ["xfcc", "ssl_client_cert"], "ca_file": str(pki.ca.path),
        "crl_file": str(pki.crl_path), "ou_as_groups": True,
        "mapping": [{"source": "san_uri", "pattern": r"spiffe://example\.org/ns/(?P<ns>[^/]+)/sa/(?P<sa>[^/]+)",
                     "username": "{sa}", "tenant": "{ns}", "groups": ["svc-{ns}"]},
                    {"source": "san_email"}],
    }
    config["routes"] = [
        {"id": "api", "match": {"path": "/api/**"}, "upstream": upstream, "authenticators": ["forwarded"]},
        {"id": "public", "match": {"path": "/public/**"}, "upstream": upstream,
         "authenticators": ["bearer", "public"], "labels": {"access": "public"}},
        {"id": "certinfo", "match": {"path": "/certinfo/**"}, "upstream": upstream,
         "authenticators": ["forwarded"], "policy": {"path": "x509test/decision"}},
    ]
    proxy = ProxyProcess(config, tmp).wait_ready()

    lenient_port, strict_port = free_port(), free_port()
    nginx = start_nginx(tmp / "nginx", NGINX_SERVERS.format(
        server_cert=pki.server.cert_path, server_key=pki.server.key_path, ca=pki.ca.path, crl=pki.crl_path,
        lenient_port=lenient_port, strict_port=strict_port, proxy_port=proxy.port, trusted=TRUSTED),
        [lenient_port, strict_port])
    proxy.lenient = f"https://127.0.0.1:{lenient_port}"
    proxy.strict = f"https://127.0.0.1:{strict_port}"
    yield proxy
    nginx.stop()
    proxy.stop()


def curl(url: str, pki: PKI, cert=None) -> tuple[int, dict]:
    argv = ["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca.path), "-o", "-", "-w", "\n%{http_code}"]
    if cert is not None:
        argv += ["--cert", str(cert.cert_path), "--key", str(cert.key_path)]
    result = subprocess.run(argv + [url], capture_output=True, text=True, timeout=20)
    body, _, status = result.stdout.rpartition("\n")
    try:
        payload = json.loads(body) if body.strip() else {}
    except ValueError:
        payload = {"raw": body}
    return int(status or 0), payload


def trusted_client(proxy) -> httpx.Client:
    return httpx.Client(base_url=proxy.url, timeout=10, transport=httpx.HTTPTransport(local_address=TRUSTED))


def header_names(payload: dict) -> set[str]:
    return {k.lower() for k, _ in payload["header_list"]}


def xfcc_for(cert, *, chain: bool = False, hash_value: str | None = None) -> str:
    parts = ["By=spiffe://example.org/ns/edge/sa/envoy", f"Hash={hash_value or cert.sha256}",
             f'Cert="{cert.escaped_pem}"']
    if chain:
        parts.append(f'Chain="{cert.escaped_pem}"')
    parts.append(f'Subject="{cert.cert.subject.rfc4514_string()}"')
    return ";".join(parts)


# ---------------------------------------------------------------- nginx in front


def test_nginx_forwards_a_good_certificate(front, pki):
    status, payload = curl(front.lenient + "/api/invoices/1", pki, pki.good)
    assert status == 200, payload
    headers = {k.lower(): v for k, v in payload["headers"].items()}
    assert headers["x-forwarded-user"] == "alice@example.org"
    assert headers["x-forwarded-groups"] == "finance"
    assert "ssl-client-cert" not in header_names(payload)  # consumed, never passed upstream


def test_nginx_strict_front_and_proxy_agree(front, pki):
    status, payload = curl(front.strict + "/api/invoices/1", pki, pki.good)
    assert status == 200, payload
    status, _ = curl(front.strict + "/api/invoices/1", pki, pki.revoked)
    assert status == 400  # nginx itself refuses the revoked certificate


# nginx's optional_no_ca still refuses expired and wrong-purpose certificates itself; these it passes on
@pytest.mark.parametrize("name, reason", [
    ("untrusted", "certificate_untrusted"),
    ("revoked", "certificate_revoked"),
    ("no_eku", "certificate_wrong_usage"),
])
def test_certificates_forwarded_by_nginx_are_revalidated(front, pki, name, reason):
    status, payload = curl(front.lenient + "/api/invoices/1", pki, getattr(pki, name))
    assert status == 401, payload
    assert payload["reason"] == reason


def test_nginx_without_client_certificate_is_401(front, pki):
    status, payload = curl(front.lenient + "/api/invoices/1", pki)
    assert status == 401
    assert payload["reason"] == "credential_missing"


def test_nginx_forwarded_certificate_reaches_the_policy(front, pki):
    status, payload = curl(front.lenient + "/certinfo/x", pki, pki.good)
    assert status == 200, payload
    headers = {k.lower(): v for k, v in payload["headers"].items()}
    assert headers["x-policy-source-certificate"] == pki.good.escaped_pem
    assert headers["x-policy-cert-subject"] == pki.good.cert.subject.rfc4514_string()


# ---------------------------------------------------------------- Envoy's X-Forwarded-Client-Cert


def test_xfcc_from_trusted_peer_maps_spiffe_id(front, pki):
    with trusted_client(front) as c:
        r = c.get("/api/invoices/1", headers={"X-Forwarded-Client-Cert": xfcc_for(pki.spiffe, chain=True),
                                              "X-Request-Id": "xfcc-spiffe"})
    assert r.status_code == 403, r.text  # authenticated; the service has no finance rights
    assert r.json()["reason"] == "policy_denied"
    assert r.json()["reasons"] == ["user spiffe://example.org/ns/acme/sa/billing may not GET /api/invoices/1"]
    event = audit_event(front, "xfcc-spiffe")
    assert event["identity"]["sub"] == "spiffe://example.org/ns/acme/sa/billing"
    assert event["identity"]["username"] == "billing"
    assert event["identity"]["groups"] == ["svc-acme"]


def test_xfcc_last_element_is_the_one_used(front, pki):
    value = xfcc_for(pki.untrusted) + "," + xfcc_for(pki.good)
    with trusted_client(front) as c:
        r = c.get("/api/invoices/1", headers={"X-Forwarded-Client-Cert": value})
    assert r.status_code == 200, r.text
    assert {k.lower(): v for k, v in r.json()["headers"].items()}["x-forwarded-user"] == "alice@example.org"
    assert "x-forwarded-client-cert" not in header_names(r.json())


@pytest.mark.parametrize("value", [
    "By=spiffe://x;Hash=abc",                                   # no Cert
    'By=x;Cert="-----BEGIN%20CERTIFICATE-----%0Anope%0A-----END%20CERTIFICATE-----"',
    'By=x;Cert="unterminated',
    "Cert=;;=;",
    "By=x;Cert=%ZZ",
])
def test_malformed_xfcc_is_401(front, value):
    with trusted_client(front) as c:
        r = c.get("/api/invoices/1", headers={"X-Forwarded-Client-Cert": value})
    assert r.status_code == 401
    assert r.json()["reason"] == "certificate_header_malformed"


def test_xfcc_hash_must_match_the_certificate(front, pki):
    with trusted_client(front) as c:
        r = c.get("/api/invoices/1", headers={"X-Forwarded-Client-Cert": xfcc_for(pki.good, hash_value="00" * 32)})
    assert r.status_code == 401
    assert r.json()["reason"] == "certificate_header_malformed"


@pytest.mark.parametrize("name, reason", [
    ("expired", "certificate_expired"),
    ("untrusted", "certificate_untrusted"),
    ("revoked", "certificate_revoked"),
    ("wrong_eku", "certificate_wrong_usage"),
    ("no_eku", "certificate_wrong_usage"),
])
def test_certificates_in_xfcc_are_revalidated(front, pki, name, reason):
    with trusted_client(front) as c:
        r = c.get("/api/invoices/1", headers={"X-Forwarded-Client-Cert": xfcc_for(getattr(pki, name))})
    assert r.status_code == 401
    assert r.json()["reason"] == reason


# ---------------------------------------------------------------- forged by an untrusted peer


@pytest.mark.parametrize("header, value", [
    ("ssl-client-cert", "good-pem"),
    ("X-Forwarded-Client-Cert", "good-xfcc"),
])
def test_forged_certificate_header_from_untrusted_peer_is_ignored(front, pki, header, value):
    value = pki.good.escaped_pem if value == "good-pem" else xfcc_for(pki.good)
    with front.client() as c:  # from 127.0.0.1, which is not a trusted proxy
        r = c.get("/api/invoices/1", headers={header: value})
    assert r.status_code == 401
    assert r.json()["reason"] == "credential_missing"
    assert "ignoring" in front.process.logs()


@pytest.mark.parametrize("header", ["ssl-client-cert", "X-Forwarded-Client-Cert"])
def test_forged_certificate_header_is_stripped_before_upstream(front, pki, header):
    with front.client() as c:
        r = c.get("/public/hello", headers={header: quote(pki.good.pem, safe="")})
    assert r.status_code == 200, r.text
    assert header.lower() not in header_names(r.json())
    assert "x-forwarded-user" not in header_names(r.json())


# ---------------------------------------------------------------- docs/x509.md's nginx block, as written


def test_docs_nginx_front_snippet(pki, upstream, tmp_path):
    """The server block of docs/x509.md with its example paths and ports pointed at this test's PKI
    and proxy; the proxy trusts nginx's address (127.0.0.1), as the docs' config block does."""
    issuer = DevIssuer(tmp_path / "issuer")
    config = base_config(upstream, issuer.jwks_path, tmp_path / "audit.jsonl", copy_policies(tmp_path / "policies"))
    config["listeners"]["trusted_proxies"] = ["127.0.0.1/32"]
    config["authenticators"]["edge-cert"] = {**yaml.safe_load(snippet("x509-behind-front-proxy").text)[
        "authenticators"]["edge-cert"], "ca_file": str(pki.ca.path), "crl_file": str(pki.crl_path)}
    config["routes"][1]["authenticators"] = ["edge-cert"]  # /public/**: the certificate is the only way in
    proxy = ProxyProcess(config, tmp_path).wait_ready()
    port = free_port()
    server = (snippet("x509-nginx-front").text.replace("listen 443 ssl", f"listen 127.0.0.1:{port} ssl")
              .replace("/etc/nginx/tls/server.pem", str(pki.server.cert_path))
              .replace("/etc/nginx/tls/server-key.pem", str(pki.server.key_path))
              .replace("/etc/nginx/tls/client-ca.pem", str(pki.ca.path))
              .replace("/etc/nginx/tls/client-ca.crl.pem", str(pki.crl_path))
              .replace("127.0.0.1:8080", f"127.0.0.1:{proxy.port}"))
    body = (f"    ssl_certificate {pki.server.cert_path};\n    ssl_certificate_key {pki.server.key_path};\n"
            + server)
    nginx = start_nginx(tmp_path / "nginx", body, [port])
    try:
        status, payload = curl(f"https://127.0.0.1:{port}/public/x", pki, pki.good)
        assert status == 200, payload
        assert {k.lower(): v for k, v in payload["headers"].items()}["x-forwarded-user"] == "alice@example.org"
        assert curl(f"https://127.0.0.1:{port}/public/x", pki, pki.revoked)[0] == 400  # nginx checks the CRL
        assert curl(f"https://127.0.0.1:{port}/public/x", pki)[0] == 400  # no certificate
    finally:
        nginx.stop()
        proxy.stop()
