"""API key, LDAP Basic and bearer JWT chained on one route, and the LDAP group enricher on bearer and
client-certificate identities, through the real proxy process, the real slapd (LDAPS, with failover
from a dead server) and the real echo upstream."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import time
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iam_proxy.authn.apikey import create_key, revoke_key
from iam_proxy.devcerts import issue_cert
from peers.slapd import SERVICE_DN, SERVICE_PASSWORD, SUFFIX
from support import DevIssuer, ProxyProcess, base_config, copy_policies, free_port

PEPPER = "e2e-pepper-0123456789abcdef"
FRONT_PROXY = "127.0.0.5"  # the address the "front proxy" forwarding client certificates connects from

CHAIN_POLICY = """package chain.authz

import rego.v1

decision := {"allowed": true, "reasons": ["member of finance"]} if {
	"finance" in input.identity.groups
} else := {"allowed": true, "reasons": ["key scope invoices:read"]} if {
	"invoices:read" in input.identity.scopes
} else := {"allowed": false, "reasons": [sprintf("%s may not read invoices", [input.identity.sub])]}
"""


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


class ClientPKI:
    """A client CA and a certificate whose subject is carol's directory DN (as some enterprise CAs issue)."""

    def __init__(self, directory) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = issue_cert("e2e client CA", self.ca_key, None, None, ca=True, days=2)
        self.ca_path = directory / "client-ca.pem"
        self.ca_path.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))

    def certificate(self, *rdns: tuple) -> x509.Certificate:
        now = dt.datetime.now(dt.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(oid, value) for oid, value in rdns]))
                .issuer_name(self.ca.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self.ca_key, hashes.SHA256()))


def directory_dn(uid: str) -> tuple:
    """RDNs most general first, as X.509 orders them: the subject prints as uid=...,ou=people,dc=..."""
    return ((NameOID.DOMAIN_COMPONENT, "org"), (NameOID.DOMAIN_COMPONENT, "example"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "people"), (NameOID.USER_ID, uid))


def xfcc(cert: x509.Certificate) -> str:
    """Envoy's X-Forwarded-Client-Cert for one certificate."""
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return f'Hash={digest};Cert="{quote(pem, safe="")}"'


def chained_config(base: dict, slapd, key_file, client_ca) -> dict:
    """Two directories: `corp` fails over from a dead server to slapd's LDAPS, `down` has no live server.

    /invoices   api key, LDAP Basic (corp) or bearer       /enriched   bearer + groups from corp
    /down       api key, LDAP Basic (down) or bearer       /down-enriched   bearer + groups from down
    /certs      a client certificate forwarded by a trusted front proxy (XFCC) or bearer, + groups
                from corp by the certificate's subject DN
    """
    def directory(directory_id: str, urls: list[str]) -> dict:
        return {"id": directory_id, "urls": urls, "ca_file": str(slapd.ca_file), "tls_server_name": "localhost",
                "bind_dn": SERVICE_DN, "bind_password": SERVICE_PASSWORD, "user_base_dn": SUFFIX,
                "connect_timeout_seconds": 1, "timeout_seconds": 1, "deadline_seconds": 3,
                "groups": {"sources": ["member_of"], "base_dn": f"ou=groups,{SUFFIX}", "nested": "walk"}}

    config = dict(base)
    upstream = config["routes"][0]["upstream"]
    config["directories"] = [directory("corp", [f"ldaps://127.0.0.1:{free_port()}", slapd.ldaps_url]),
                             directory("down", [f"ldaps://127.0.0.1:{free_port()}"])]
    config["authenticators"] = {
        **config["authenticators"],
        "keys": {"type": "apikey", "file": str(key_file), "pepper": "${E2E_APIKEY_PEPPER}",
                 "reload_interval_seconds": 0.2},
        "corp-basic": {"type": "ldap", "directory": "corp"},
        "down-basic": {"type": "ldap", "directory": "down"},
        "forwarded-cert": {"type": "x509", "sources": ["xfcc"], "ca_file": str(client_ca),
                           "mapping": [{"source": "subject_dn", "username": None, "email": None}]},
    }
    config["listeners"] = {**config["listeners"], "trusted_proxies": [f"{FRONT_PROXY}/32"]}
    config["enrichers"] = {
        "corp-groups": {"type": "ldap", "directory": "corp", "key": "username", "methods": ["jwt"]},
        "down-groups": {"type": "ldap", "directory": "down", "key": "username"},
        "cert-groups": {"type": "ldap", "directory": "corp", "key": "cert_subject", "lookup": "dn",
                        "methods": ["x509"], "require_entry": True},
    }

    def route(route_id: str, authenticators: list[str], enrichers: list[str] = ()) -> dict:
        return {"id": route_id, "match": {"path": f"/{route_id}/**"}, "upstream": upstream,
                "authenticators": authenticators, "enrichers": list(enrichers),
                "policy": {"path": "chain/authz/decision"}}

    config["routes"] = [route("invoices", ["keys", "corp-basic", "bearer"]),
                        route("enriched", ["bearer"], ["corp-groups"]),
                        route("down", ["keys", "down-basic", "bearer"]),
                        route("down-enriched", ["bearer"], ["down-groups"]),
                        route("certs", ["forwarded-cert", "bearer"], ["cert-groups"])]
    return config


@pytest.fixture(scope="module")
def setup(tmp_path_factory, upstream, slapd):
    """One proxy for the module (a proxy start costs seconds); tests use their own keys and request ids."""
    tmp = tmp_path_factory.mktemp("chained")
    issuer = DevIssuer(tmp / "issuer")
    policy_dir = copy_policies(tmp / "policies", {"chain.rego": CHAIN_POLICY})
    key_file = tmp / "keys.yaml"
    create_key(key_file, PEPPER, "placeholder", [], None)
    client_pki = ClientPKI(tmp)
    os.environ["E2E_APIKEY_PEPPER"] = PEPPER  # the proxy reads it through ${E2E_APIKEY_PEPPER}
    try:
        config = chained_config(base_config(upstream, issuer.jwks_path, tmp / "audit.jsonl", policy_dir),
                                slapd, key_file, client_pki.ca_path)
        proxy = ProxyProcess(config, tmp, "chained").wait_ready()
    finally:
        del os.environ["E2E_APIKEY_PEPPER"]
    yield SimpleNamespace(proxy=proxy, issuer=issuer, key_file=key_file, client_pki=client_pki)
    proxy.stop()


def new_key(setup, *scopes: str) -> tuple[str, str]:
    """A fresh key, once the proxy has picked it up; returns (key id, key)."""
    record, key = create_key(setup.key_file, PEPPER, "erp-connector", list(scopes), None)
    with setup.proxy.client() as c:
        deadline = time.monotonic() + 5
        while c.get("/invoices/1", headers={"X-API-Key": key}).status_code == 401 and time.monotonic() < deadline:
            time.sleep(0.1)
    return record.id, key


def audit_for(setup, request_id: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [e for e in setup.proxy.audit_events() if e["request_id"] == request_id]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no audit event for {request_id}")


def forwarded(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.json()["headers"].items()}


def test_each_credential_kind_passes_the_same_route(setup):
    _, key = new_key(setup, "invoices:read")
    token = setup.issuer.token("carol", ["finance"])
    with setup.proxy.client() as c:
        by_key = c.get("/invoices/1", headers={"X-API-Key": key, "X-Request-Id": "chain-key"})
        by_ldap = c.get("/invoices/1", headers={**basic("alice", "alice-secret"), "X-Request-Id": "chain-ldap"})
        by_jwt = c.get("/invoices/1", headers={"Authorization": f"Bearer {token}", "X-Request-Id": "chain-jwt"})
    assert by_key.status_code == 200, by_key.text
    assert forwarded(by_key)["x-forwarded-user"] == "erp-connector"
    assert "x-api-key" not in forwarded(by_key)  # the key is for the proxy only
    assert by_ldap.status_code == 200, by_ldap.text
    assert forwarded(by_ldap)["x-forwarded-user"] == "alice"
    assert set(forwarded(by_ldap)["x-forwarded-groups"].split(",")) == {"finance", "staff", "all-staff"}
    assert "authorization" not in forwarded(by_ldap)  # the directory password never reaches the upstream
    assert by_jwt.status_code == 200, by_jwt.text
    assert "authorization" not in forwarded(by_jwt)  # credentials stay at the proxy (pass_authorization opts in)
    methods = [audit_for(setup, rid)["identity"]["method"] for rid in ("chain-key", "chain-ldap", "chain-jwt")]
    assert methods == ["apikey", "ldap", "jwt"]


def test_ldap_user_outside_finance_is_403(setup):
    with setup.proxy.client() as c:
        r = c.get("/invoices/1", headers=basic("bob", "bob-secret"))
    assert r.status_code == 403
    assert r.json()["reasons"] == ["bob may not read invoices"]


def test_no_credential_lists_basic_and_bearer_challenges(setup):
    with setup.proxy.client() as c:
        r = c.get("/invoices/1")
    assert r.status_code == 401
    assert r.headers.get_list("www-authenticate") == ['Basic realm="iam-proxy"', 'Bearer realm="iam-proxy"']


@pytest.mark.parametrize("username,password", [
    ("alice", "wrong"), ("*", "alice-secret"), ("al*", "alice-secret"), ("alice)(uid=*", "alice-secret"),
    ("alice", ""), ("alice", " "), ("mallory", "x"), ("dup", "dup-secret"),
])
def test_bad_basic_credentials_are_401_with_basic_challenge(setup, slapd, username, password):
    with setup.proxy.client() as c:
        r = c.get("/invoices/1", headers=basic(username, password))
    assert r.status_code == 401
    assert r.json()["reason"] == "invalid_username_or_password"
    assert r.headers["www-authenticate"] == 'Basic realm="iam-proxy"'
    assert slapd.referral_trap.connections == 0


def test_bad_key_does_not_fall_through_to_ldap_or_anonymous(setup):
    with setup.proxy.client() as c:
        r = c.get("/invoices/1", headers={"X-API-Key": "iak_000000000000_" + "A" * 43,
                                          **basic("alice", "alice-secret")})
    assert r.status_code == 401 and r.json()["reason"] == "apikey_invalid"


def test_revoked_key_is_refused_after_reload(setup):
    key_id, key = new_key(setup, "invoices:read")
    revoke_key(setup.key_file, key_id)
    status, reason = None, None
    with setup.proxy.client() as c:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = c.get("/invoices/1", headers={"X-API-Key": key})
            status, reason = r.status_code, r.json().get("reason")
            if status == 401:
                break
            time.sleep(0.1)
    assert (status, reason) == (401, "apikey_revoked")


def test_enricher_adds_directory_groups_to_a_jwt_identity(setup):
    token = setup.issuer.token("alice", [])  # the token itself carries no groups
    with setup.proxy.client() as c:
        enriched = c.get("/enriched/1", headers={"Authorization": f"Bearer {token}"})
        plain = c.get("/invoices/1", headers={"Authorization": f"Bearer {token}"})
    assert enriched.status_code == 200, enriched.text
    assert "finance" in forwarded(enriched)["x-forwarded-groups"].split(",")
    assert plain.status_code == 403  # the same token on a route without the enricher


def test_secrets_never_reach_the_audit_log_or_proxy_log(setup):
    _, key = new_key(setup, "invoices:read")
    with setup.proxy.client() as c:
        c.get("/invoices/1", headers={**basic("alice", "alice-secret"), "X-Request-Id": "secrets-1"})
        c.get("/invoices/1", headers={**basic("alice", "a-wrong-password"), "X-Request-Id": "secrets-2"})
        c.get("/invoices/1", headers={"X-API-Key": key, "X-Request-Id": "secrets-3"})
    for rid in ("secrets-1", "secrets-2", "secrets-3"):
        audit_for(setup, rid)
    audit = setup.proxy.audit_path.read_text()
    logs = setup.proxy.process.logs()
    for secret in ("alice-secret", "a-wrong-password", base64.b64encode(b"alice:alice-secret").decode(), key,
                   key.split("_", 2)[2], PEPPER, SERVICE_PASSWORD):
        assert secret not in audit
        assert secret not in logs


def test_directory_down_is_503_audited_and_other_credentials_still_work(setup):
    _, key = new_key(setup, "invoices:read")
    token = setup.issuer.token("alice", ["finance"])
    with setup.proxy.client() as c:
        by_ldap = c.get("/down/1", headers={**basic("alice", "alice-secret"), "X-Request-Id": "down-ldap"})
        enriched = c.get("/down-enriched/1", headers={"Authorization": f"Bearer {token}",
                                                      "X-Request-Id": "down-enriched"})
        by_key = c.get("/down/1", headers={"X-API-Key": key})
    assert by_ldap.status_code == 503 and by_ldap.json()["reason"] == "ldap_unavailable"
    assert enriched.status_code == 503 and enriched.json()["reason"] == "ldap_unavailable"
    assert by_key.status_code == 200  # a dead directory does not take the other credentials down
    for rid in ("down-ldap", "down-enriched"):
        event = audit_for(setup, rid)
        assert (event["outcome"], event["reason"], event["status"]) == ("error", "ldap_unavailable", 503)


# ---------------------------------------------------------------- client certificate + directory groups


def front_proxy_client(setup) -> httpx.Client:
    return httpx.Client(base_url=setup.proxy.url, timeout=10,
                        transport=httpx.HTTPTransport(local_address=FRONT_PROXY))


def test_certificate_subject_gets_directory_groups_on_a_cert_or_bearer_route(setup):
    carol = setup.client_pki.certificate(*directory_dn("carol"))
    stranger = setup.client_pki.certificate(*directory_dn("stranger"))
    with front_proxy_client(setup) as front:
        by_cert = front.get("/certs/1", headers={"X-Forwarded-Client-Cert": xfcc(carol),
                                                 "X-Request-Id": "cert-carol"})
        unknown = front.get("/certs/1", headers={"X-Forwarded-Client-Cert": xfcc(stranger)})
    with setup.proxy.client() as c:
        by_token = c.get("/certs/1", headers={"Authorization": f"Bearer {setup.issuer.token('bob', ['finance'])}"})
    # carol's directory groups (admins, loop-a, loop-b) do not include finance: the policy sees them
    assert by_cert.status_code == 403, by_cert.text
    assert by_cert.json()["reasons"] == ["UID=carol,OU=people,DC=example,DC=org may not read invoices"]
    event = audit_for(setup, "cert-carol")
    assert event["identity"]["method"] == "x509"
    assert event["identity"]["groups"] == ["admins", "loop-a", "loop-b"]
    # require_entry: a certificate whose subject is not in the directory is refused
    assert unknown.status_code == 401 and unknown.json()["reason"] == "user_not_in_directory"
    # the same route still takes bearer tokens, which the x509-only enricher leaves alone
    assert by_token.status_code == 200, by_token.text


def test_certificate_of_a_finance_member_passes(setup):
    alice = setup.client_pki.certificate(*directory_dn("alice"))
    with front_proxy_client(setup) as front:
        r = front.get("/certs/1", headers={"X-Forwarded-Client-Cert": xfcc(alice)})
    assert r.status_code == 200, r.text
    assert "finance" in forwarded(r)["x-forwarded-groups"].split(",")
    assert forwarded(r)["x-forwarded-user"] == "UID=alice,OU=people,DC=example,DC=org"
