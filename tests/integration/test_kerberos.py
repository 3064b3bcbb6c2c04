"""Kerberos/SPNEGO against a real MIT KDC: `kinit` from a password file, then `curl --negotiate` and
a python-gssapi client (which checks the proxy's mutual-authentication token). Bad inputs: an NTLM
token, a truncated token, a replayed token, not-base64, a ticket for another service, a realm outside
the allow-list, and a keytab that cannot be read (503, audited).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess

import gssapi
import pytest

from krb_kdc import KDC, REALM, USERS
from snippets import snippet
from support import DevIssuer, ProxyProcess, audit_event, base_config, copy_policies, upstream_headers

pytestmark = pytest.mark.peer("krb5kdc")

SPNEGO = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
# An NTLM NEGOTIATE_MESSAGE (type 1), as Windows sends in "Authorization: Negotiate" when it falls back
NTLM_TYPE1 = base64.b64decode("TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==")


def _der(tag: int, content: bytes) -> bytes:
    assert len(content) < 128
    return bytes([tag, len(content)]) + content


# The same NTLM message wrapped in SPNEGO, offering only NTLM (1.3.6.1.4.1.311.2.2.10)
SPNEGO_NTLM_ONLY = _der(0x60, _der(0x06, bytes.fromhex("2b0601050502")) + _der(0xA0, _der(0x30, (
    _der(0xA0, _der(0x30, _der(0x06, bytes.fromhex("2b06010401823702020a")))) + _der(0xA2, _der(0x04, NTLM_TYPE1))))))


@pytest.fixture(scope="session")
def kdc(tmp_path_factory):
    server = KDC.start(tmp_path_factory.mktemp("kdc"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def krb_proxy(kdc, upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("krb-proxy")
    policy_dir = copy_policies(tmp / "policies")
    issuer = DevIssuer(tmp / "issuer")
    config = base_config(upstream, issuer.jwks_path, tmp / "audit.jsonl", policy_dir)
    config["authenticators"].update({
        "krb": {"type": "kerberos", "keytab": str(kdc.keytab), "realm_tenants": {REALM: "example"}},
        "krb_other_realm": {"type": "kerberos", "keytab": str(kdc.keytab), "realms": ["OTHER.ORG"]},
        "krb_no_keytab": {"type": "kerberos", "keytab": str(tmp / "missing.keytab")},
    })
    public = {"access": "public"}
    config["routes"] = [
        {"id": "krb", "match": {"path": "/krb/**"}, "upstream": upstream, "authenticators": ["krb"], "labels": public},
        {"id": "api", "match": {"path": "/api/**"}, "upstream": upstream, "authenticators": ["krb"]},
        {"id": "either", "match": {"path": "/either/**"}, "upstream": upstream,
         "authenticators": ["bearer", "krb"], "labels": public},
        {"id": "other-realm", "match": {"path": "/other-realm/**"}, "upstream": upstream,
         "authenticators": ["krb_other_realm"], "labels": public},
        {"id": "broken", "match": {"path": "/broken/**"}, "upstream": upstream,
         "authenticators": ["krb_no_keytab"], "labels": public},
    ]
    proxy = ProxyProcess(config, tmp, env=kdc.env).wait_ready()
    proxy.issuer = issuer
    proxy.base = f"http://localhost:{proxy.port}"  # the service name curl derives: HTTP@localhost
    yield proxy
    proxy.stop()


@pytest.fixture
def alice(kdc, monkeypatch) -> dict[str, str]:
    """alice's ticket cache, and this process's environment pointed at it (for python-gssapi)."""
    env = kdc.kinit("alice")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def initiate(service: str = "HTTP@localhost") -> tuple[gssapi.SecurityContext, str]:
    ctx = gssapi.SecurityContext(name=gssapi.Name(service, gssapi.NameType.hostbased_service), usage="initiate",
                                 mech=SPNEGO, flags=gssapi.RequirementFlag.mutual_authentication)
    return ctx, "Negotiate " + base64.b64encode(ctx.step()).decode()


# ---------------------------------------------------------------- real clients


def test_curl_negotiate_with_kinit_ticket(krb_proxy, alice):
    result = subprocess.run(["curl", "-sS", "-v", "--max-time", "10", "--negotiate", "-u", ":",
                             f"{krb_proxy.base}/krb/hello"], capture_output=True, text=True, timeout=20,
                            env={**os.environ, **alice})
    assert result.returncode == 0, result.stderr
    assert "< HTTP/1.1 200" in result.stderr
    assert re.search(r"^< www-authenticate: Negotiate \S+", result.stderr, re.M | re.I)  # mutual auth token
    body = json.loads(result.stdout)
    assert {k.lower(): v for k, v in body["headers"].items()}["x-forwarded-user"] == "alice@EXAMPLE.ORG"


def test_python_gssapi_client_gets_mutual_authentication(krb_proxy, alice):
    ctx, header = initiate()
    with krb_proxy.client() as c:
        r = c.get("/krb/hello", headers={"Authorization": header, "X-Request-Id": "krb-mutual"})
    assert r.status_code == 200, r.text
    scheme, _, token = r.headers["www-authenticate"].partition(" ")
    assert scheme == "Negotiate"
    ctx.step(base64.b64decode(token))
    assert ctx.complete  # the proxy proved it holds the service key
    headers = upstream_headers(r)
    assert headers["x-forwarded-user"] == "alice@EXAMPLE.ORG"
    assert headers["x-forwarded-preferred-username"] == "alice"
    event = audit_event(krb_proxy, "krb-mutual")
    assert event["identity"]["method"] == "kerberos"
    assert event["input"]["attributes"]["request"]["http"]["headers"]["authorization"] == "Negotiate ***"


def test_realm_becomes_the_tenant(krb_proxy, alice):
    # the shipped ABAC policy lets an identity read its own tenant's resources, and only those
    with krb_proxy.client() as c:
        own = c.get("/api/tenants/example/orders", headers={"Authorization": initiate()[1]})
        other = c.get("/api/tenants/acme/orders", headers={"Authorization": initiate()[1]})
    assert own.status_code == 200, own.text
    assert other.status_code == 403


def test_chained_route_takes_bearer_or_negotiate(krb_proxy, alice):
    token = krb_proxy.issuer.token("carol")
    with krb_proxy.client() as c:
        by_bearer = c.get("/either/x", headers={"Authorization": f"Bearer {token}"})
        by_kerberos = c.get("/either/x", headers={"Authorization": initiate()[1]})
        neither = c.get("/either/x")
    assert upstream_headers(by_bearer)["x-forwarded-user"] == "carol"
    assert upstream_headers(by_kerberos)["x-forwarded-user"] == "alice@EXAMPLE.ORG"
    assert neither.status_code == 401
    assert sorted(neither.headers.get_list("www-authenticate"))[1] == "Negotiate"


# ---------------------------------------------------------------- bad inputs


def test_no_credential_gets_negotiate_challenge(krb_proxy):
    with krb_proxy.client() as c:
        r = c.get("/krb/hello")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Negotiate"
    assert r.json()["reason"] == "credential_missing"


@pytest.mark.parametrize("header, reason", [
    ("Negotiate " + base64.b64encode(NTLM_TYPE1).decode(), "ntlm_not_supported"),
    ("Negotiate " + base64.b64encode(SPNEGO_NTLM_ONLY).decode(), "ntlm_not_supported"),
    ("Negotiate not*base64!", "negotiate_token_malformed"),
    ("Negotiate", "negotiate_token_malformed"),
    ("Negotiate " + base64.b64encode(b"\x60\x82\x02\x00garbage").decode(), "negotiate_failed"),
])
def test_bad_negotiate_tokens_are_401(krb_proxy, header, reason):
    with krb_proxy.client() as c:
        r = c.get("/krb/hello", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.json()["reason"] == reason
    assert r.headers["www-authenticate"] == "Negotiate"


def test_truncated_negotiate_token_is_401(krb_proxy, alice):
    token = base64.b64decode(initiate()[1].split(" ", 1)[1])
    truncated = base64.b64encode(token[: len(token) // 2]).decode()
    with krb_proxy.client() as c:
        r = c.get("/krb/hello", headers={"Authorization": f"Negotiate {truncated}"})
    assert r.status_code == 401
    assert r.json()["reason"] == "negotiate_failed"


def test_replayed_token_is_401(krb_proxy, alice):
    header = initiate()[1]
    with krb_proxy.client() as c:
        first = c.get("/krb/hello", headers={"Authorization": header})
        replay = c.get("/krb/hello", headers={"Authorization": header})
    assert first.status_code == 200
    assert replay.status_code == 401
    assert replay.json()["reason"] == "negotiate_failed"


def test_ticket_for_another_service_is_401(krb_proxy, alice):
    with krb_proxy.client() as c:
        r = c.get("/krb/hello", headers={"Authorization": initiate("HTTP@elsewhere")[1]})
    assert r.status_code == 401
    assert r.json()["reason"] == "negotiate_failed"


def test_realm_outside_allow_list_is_401(krb_proxy, alice):
    with krb_proxy.client() as c:
        r = c.get("/other-realm/x", headers={"Authorization": initiate()[1]})
    assert r.status_code == 401
    assert r.json()["reason"] == "realm_not_allowed"


def test_unreadable_keytab_is_503_and_audited(krb_proxy, alice):
    with krb_proxy.client() as c:
        r = c.get("/broken/x", headers={"Authorization": initiate()[1], "X-Request-Id": "krb-no-keytab"})
    assert r.status_code == 503
    assert r.json()["reason"] == "keytab_unavailable"
    event = audit_event(krb_proxy, "krb-no-keytab")
    assert (event["status"], event["outcome"], event["reason"]) == (503, "error", "keytab_unavailable")


# ---------------------------------------------------------------- docs/kerberos.md, as written


def test_docs_keytab_commands_on_the_kdc(kdc, tmp_path):
    env = {**kdc.env, "KRB5_KDC_PROFILE": str(kdc.directory / "kdc.conf")}
    script = snippet("kerberos-mit-keytab").text.replace("/etc/iam-proxy/", f"{tmp_path}/")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    listed = subprocess.run(["klist", "-k", str(tmp_path / "http.keytab")], capture_output=True, text=True,
                            env={**os.environ, **env})
    assert f"HTTP/api.example.org@{REALM}" in listed.stdout


def test_docs_curl_snippet(krb_proxy, kdc, tmp_path):
    env = {**kdc.env, "KRB5CCNAME": f"FILE:{tmp_path}/alice.ccache"}
    script = snippet("kerberos-curl").text.replace("https://api.example.org/api/orders", f"{krb_proxy.base}/krb/hello")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], input=USERS["alice"] + "\n",
                            capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert "< HTTP/1.1 200" in result.stderr


def test_docs_python_client_snippet(krb_proxy, alice):
    code = (snippet("kerberos-python-client").text.replace("HTTP@api.example.org", "HTTP@localhost")
            .replace("https://api.example.org/api/orders", f"{krb_proxy.base}/krb/hello"))
    scope: dict = {}
    exec(compile(code, "docs/kerberos.md", "exec"), scope)  # noqa: S102 - the docs' client, run as written
    assert scope["r"].status_code == 200 and scope["ctx"].complete
