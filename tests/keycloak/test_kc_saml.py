"""The proxy as a SAML SP in front of the session's Keycloak (a SAML client in the iam-test realm,
registered through the admin REST API), driven by Debian's Chromium: login and Single Logout.

It lives beside the OIDC browser tests so that both use the one session-scoped Keycloak.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "saml"))

from crafting import NO_KEY_VARIANTS, Captured, assert_refused, capture_login  # noqa: E402
from idp_kit import make_keypair  # noqa: E402
from saml_support import wait_event, wait_saml_ready  # noqa: E402

from support import free_port  # noqa: E402

REALM = "iam-test"
SAML_POLICY = """package kcsaml.authz

import rego.v1

decision := {"allowed": true} if "finance" in input.identity.groups
else := {"allowed": false, "reasons": ["finance only"]}

public := true
"""


@pytest.fixture
def saml_client(keycloak, tmp_path):
    """A Keycloak SAML client for a proxy on a fresh port; yields (proxy port, SP key, SP cert)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key_file, cert_file = make_keypair(tmp_path / "sp", "sp")
    cert_b64 = "".join(cert_file.read_text().splitlines()[1:-1])
    admin = keycloak.admin(REALM)
    client_id = f"{base}/.iam/saml/metadata"
    mapper = {"protocol": "saml", "consentRequired": False}
    admin.create_client({
        "clientId": client_id, "protocol": "saml", "enabled": True, "frontchannelLogout": True,
        "redirectUris": [f"{base}/*"], "baseUrl": f"{base}/app/",
        "attributes": {
            "saml.server.signature": "true",           # sign the response
            "saml.assertion.signature": "true",        # and the assertion
            "saml.signature.algorithm": "RSA_SHA256",
            "saml_signature_canonicalization_method": "http://www.w3.org/2001/10/xml-exc-c14n#",
            "saml.client.signature": "true",           # our AuthnRequest/LogoutRequest must be signed
            "saml.signing.certificate": cert_b64,
            "saml.force.post.binding": "true",
            "saml.authnstatement": "true",
            "saml.encrypt": "false",
            "saml_force_name_id_format": "true",
            "saml_name_id_format": "username",
            "saml_assertion_consumer_url_post": f"{base}/.iam/saml/acs",
            "saml_single_logout_service_url_redirect": f"{base}/.iam/saml/slo",
        },
        "protocolMappers": [
            {**mapper, "name": "email", "protocolMapper": "saml-user-property-mapper",
             "config": {"user.attribute": "email", "attribute.name": "email", "attribute.nameformat": "Basic"}},
            {**mapper, "name": "username", "protocolMapper": "saml-user-property-mapper",
             "config": {"user.attribute": "username", "attribute.name": "username",
                        "attribute.nameformat": "Basic"}},
            {**mapper, "name": "groups", "protocolMapper": "saml-group-membership-mapper",
             "config": {"attribute.name": "groups", "full.path": "false", "single": "false",
                        "attribute.nameformat": "Basic"}},
            {**mapper, "name": "roles", "protocolMapper": "saml-role-list-mapper",
             "config": {"attribute.name": "Role", "single": "false", "attribute.nameformat": "Basic"}},
        ],
    })
    yield port, key_file, cert_file
    admin.delete_client(admin.get_client_id(client_id))


@pytest.fixture
def saml_kc_proxy(saml_client, keycloak, upstream, tmp_path, proxy_factory):
    port, key_file, cert_file = saml_client
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "kcsaml.rego").write_text(SAML_POLICY)
    config = {
        "listeners": {"proxy": {"host": "127.0.0.1", "port": port},
                      "admin": {"host": "127.0.0.1", "port": free_port()}},
        "authenticators": {"saml": {
            "type": "saml", "base_url": f"http://127.0.0.1:{port}", "key_file": str(key_file),
            "cert_file": str(cert_file), "preset": "keycloak", "want_response_signed": True,
            "idp": {"url": f"{keycloak.issuer(REALM)}/protocol/saml/descriptor"},
            "post_logout_path": "/public/bye"}, "public": {"type": "anonymous"}},
        "routes": [
            {"id": "app", "match": {"path": "/app/**"}, "upstream": upstream, "authenticators": ["saml"],
             "policy": {"path": "kcsaml/authz/decision"}},
            {"id": "public", "match": {"path": "/public/**"}, "upstream": upstream,
             "authenticators": ["public"], "policy": {"path": "kcsaml/authz/public"}},
        ],
        "policy": {"dir": str(policies), "reload_interval_seconds": 0},
        "audit": {"sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl")}]},
        "sessions": {"secret": "k" * 40, "cookie_name": "iam_session", "secure": False,
                     "revocation_file": str(tmp_path / "revoked-sessions.jsonl")},
    }
    return wait_saml_ready(proxy_factory(config))


def _echo(page) -> dict:
    return json.loads(page.inner_text("body"))


def test_keycloak_saml_login_and_single_logout(saml_kc_proxy, keycloak, page):
    proxy = saml_kc_proxy
    page.goto(f"{proxy.url}/app/ledger?q=1")
    # no session: the browser goes to the SP login, then with a signed AuthnRequest to Keycloak
    page.wait_for_url(re.compile(re.escape(keycloak.issuer(REALM)) + r"/protocol/saml.*"))
    page.fill("#username", "alice")
    page.fill("#password", "alice-password")
    page.click("#kc-login")
    page.wait_for_url(f"{proxy.url}/app/ledger?q=1")
    headers = {k.lower(): v for k, v in _echo(page)["headers"].items()}
    assert headers["x-forwarded-user"] == "alice"
    assert headers["x-forwarded-email"] == "alice@example.org"
    assert "finance" in headers["x-forwarded-groups"].split(",")
    acs = wait_event(proxy, lambda e: e["http"]["path"] == "/.iam/saml/acs")
    assert acs["outcome"] == "allowed" and acs["identity"]["method"] == "saml"
    assert acs["identity"]["iss"] == keycloak.issuer(REALM)

    # SP-initiated Single Logout: our LogoutRequest ends the Keycloak session too
    page.goto(f"{proxy.url}/.iam/saml/logout")
    page.wait_for_url(f"{proxy.url}/public/bye")
    slo = wait_event(proxy, lambda e: e["http"]["path"] == "/.iam/saml/slo")
    assert slo["outcome"] == "allowed", slo
    # the app wants a login again, and so does Keycloak (its session is gone)
    page.goto(f"{proxy.url}/app/ledger")
    page.wait_for_url(re.compile(re.escape(keycloak.issuer(REALM)) + r"/protocol/saml.*"))
    page.wait_for_selector("#username")


def test_keycloak_responses_crafted_by_an_attacker_are_refused(saml_kc_proxy, keycloak, page, tmp_path):
    """The key-less attack variants (signature wrapping, comment in NameID, DTDs, tampering, replay)
    against a real Keycloak response; the re-signed variants run against the saml-idp npm IdP."""
    proxy = saml_kc_proxy

    def sign_in(page) -> None:
        page.fill("#username", "alice")
        page.fill("#password", "alice-password")
        page.click("#kc-login")

    xml, cookie = capture_login(page, proxy, sign_in, "/app/ledger")
    captured = Captured(proxy, xml, cookie, None, tmp_path, keycloak.issuer(REALM))
    for craft, reason in NO_KEY_VARIANTS:
        assert_refused(captured, captured.post(craft(captured)), reason)
    accepted = captured.post()
    assert accepted.status_code == 303 and accepted.headers["location"] == "/app/ledger", accepted.text
    assert_refused(captured, captured.post(), "saml_replayed")


def test_logout_at_keycloak_ends_the_proxy_session(saml_kc_proxy, keycloak, page):
    """IdP-initiated Single Logout: signing out at Keycloak sends our SLO endpoint a signed
    LogoutRequest through the browser; the proxy session ends and Keycloak gets a LogoutResponse."""
    proxy = saml_kc_proxy
    page.goto(f"{proxy.url}/app/ledger")
    page.wait_for_selector("#username")
    page.fill("#username", "alice")
    page.fill("#password", "alice-password")
    page.click("#kc-login")
    page.wait_for_url(f"{proxy.url}/app/ledger")
    session = next(c for c in page.context.cookies() if c["name"] == "iam_session")

    page.goto(f"{keycloak.issuer(REALM)}/protocol/openid-connect/logout")
    page.click("#kc-logout")
    page.wait_for_load_state()
    slo = wait_event(proxy, lambda e: e["http"]["path"] == "/.iam/saml/slo")
    assert slo["outcome"] == "allowed", slo
    # the session cookie the browser had is dead now, even replayed by another client
    with httpx.Client(base_url=proxy.url, timeout=10, cookies={"iam_session": session["value"]}) as client:
        assert client.get("/app/ledger", headers={"accept": "application/json"}).status_code == 401
