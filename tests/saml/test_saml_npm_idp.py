"""The proxy as a SAML SP against a real, independent IdP: the saml-idp npm package (samlp and
xml-crypto, no code shared with pysaml2), driven by headless Chromium."""

from __future__ import annotations

import re

import httpx
import pytest
from saml_support import NpmSamlIdP, saml_proxy_config, wait_event, wait_saml_ready

from support import run_cli


@pytest.fixture
def npm_proxy(proxy_factory, saml_proxy_port, upstream, tmp_path, saml_sp_keys, npm_idp: NpmSamlIdP):
    config = saml_proxy_config(port=saml_proxy_port, upstream=upstream, tmp=tmp_path, sp_keys=saml_sp_keys,
                               idp={"url": npm_idp.metadata_url})
    return wait_saml_ready(proxy_factory(config))


def _sign_in(page, proxy, npm_idp, rd="/app/hello"):
    page.goto(f"{proxy.url}/.iam/saml/login?rd={rd}")
    page.wait_for_url(f"{npm_idp.url}/**")
    page.fill("#userName", "alice@example.org")
    with page.expect_navigation(url=f"{proxy.url}{rd}"):
        page.click("#btn-sign-in")


def test_browser_login_and_logout(npm_proxy, npm_idp, chromium_browser):
    context = chromium_browser.new_context()
    page = context.new_page()
    _sign_in(page, npm_proxy, npm_idp)
    echoed = page.evaluate("() => JSON.parse(document.body.innerText)")
    headers = {k.lower(): v for k, v in echoed["headers"].items()}
    assert echoed["path"] == "/app/hello"
    assert headers["x-forwarded-user"] == "alice@example.org"
    assert headers["x-forwarded-email"] == "saml.jackson@example.com"
    assert "x-iam-assertion" in headers
    assert any(c["name"] == "iam_session" for c in context.cookies())

    page.goto(f"{npm_proxy.url}/.iam/saml/logout")
    page.wait_for_url(f"{npm_proxy.url}/public/signed-out")
    assert not any(c["name"] == "iam_session" and c["value"] for c in context.cookies())
    # the app wants a login again: the browser is sent back to the IdP
    page.goto(f"{npm_proxy.url}/app/hello")
    page.wait_for_url(f"{npm_idp.url}/**")
    with httpx.Client(base_url=npm_proxy.url, timeout=10) as client:
        assert client.get("/app/hello", headers={"accept": "application/json"}).status_code == 401
    context.close()


def test_idp_initiated_logout_ends_the_proxy_session(npm_proxy, npm_idp, chromium_browser):
    context = chromium_browser.new_context()
    page = context.new_page()
    _sign_in(page, npm_proxy, npm_idp)
    # the IdP starts Single Logout: its signed LogoutRequest comes to /.iam/saml/slo, which ends the
    # session and answers with a signed LogoutResponse over HTTP-Redirect
    page.goto(f"{npm_idp.url}/signout")
    page.wait_for_load_state()
    slo = wait_event(npm_proxy, lambda e: e["http"]["path"] == "/.iam/saml/slo")
    assert slo["outcome"] == "allowed", slo
    session = {c["name"]: c["value"] for c in context.cookies() if c["name"] == "iam_session"}
    with httpx.Client(base_url=npm_proxy.url, timeout=10, cookies=session) as client:
        assert client.get("/app/hello", headers={"accept": "application/json"}).status_code == 401
    context.close()


def test_sp_metadata_endpoint_and_cli_agree(npm_proxy, tmp_path):
    with httpx.Client(base_url=npm_proxy.url, timeout=10) as client:
        served = client.get("/.iam/saml/metadata")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/samlmetadata+xml"
    out = run_cli("saml", "metadata", "--config", str(npm_proxy.config_path))
    assert out.returncode == 0, out.stderr
    for document in (served.text, out.stdout):
        assert f'entityID="{npm_proxy.url}/.iam/saml/metadata"' in document
        assert re.search(rf'AssertionConsumerService[^>]*Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"'
                         rf'[^>]*Location="{re.escape(npm_proxy.url)}/.iam/saml/acs"', document) or \
            re.search(rf'AssertionConsumerService[^>]*Location="{re.escape(npm_proxy.url)}/.iam/saml/acs"', document)
        assert f'Location="{npm_proxy.url}/.iam/saml/slo"' in document
        assert 'AuthnRequestsSigned="true"' in document and 'WantAssertionsSigned="true"' in document
        assert "PRIVATE KEY" not in document
