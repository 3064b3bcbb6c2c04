"""Browser sign-in against the real Keycloak with Debian's Chromium: the issue's user journeys."""

from __future__ import annotations

import json
import re
import time


from kc_support import ARTIFACTS


def _sign_in(page, username: str, password: str) -> None:
    page.wait_for_selector("#username")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#kc-login")


def _upstream_echo(page) -> dict:
    return json.loads(page.inner_text("body"))


def _header(echo: dict, name: str) -> str | None:
    return {k.lower(): v for k, v in echo["headers"].items()}.get(name.lower())


def test_browser_signs_in_reaches_upstream_and_signs_out(page, kc_proxy_factory, keycloak, dev_tls):
    proxy = kc_proxy_factory()
    page.goto(f"{proxy.url}/finance/report?year=2026")
    # no session: the browser is sent to the Keycloak login page of the route's realm
    page.wait_for_url(re.compile(re.escape(keycloak.issuer("iam-test")) + r"/protocol/openid-connect/auth\?.*"))
    auth_url = page.url
    assert "code_challenge_method=S256" in auth_url and "nonce=" in auth_url and "state=" in auth_url
    _sign_in(page, "alice", "alice-password")

    page.wait_for_url(f"{proxy.url}/finance/report?year=2026")
    echo = _upstream_echo(page)
    assert echo["path"] == "/finance/report?year=2026"
    assert _header(echo, "x-forwarded-user")
    assert _header(echo, "x-forwarded-preferred-username") == "alice"
    assert _header(echo, "x-forwarded-email") == "alice@example.org"
    assert _header(echo, "x-forwarded-groups") == "finance"

    cookies = {c["name"]: c for c in page.context.cookies()}
    session_cookie = cookies["__Host-iam_session"]
    assert session_cookie["secure"] and session_cookie["httpOnly"] and session_cookie["sameSite"] == "Lax"
    assert session_cookie["path"] == "/" and not session_cookie["domain"].startswith(".")
    assert "__Host-iam_oidc_login" not in cookies  # the one-time login state is gone

    # the signed-in page shows identity, groups, roles and expiry
    page.goto(f"{proxy.url}/.iam/")
    identity = page.inner_text("#identity")
    assert "alice@example.org" in identity and "finance" in identity
    assert "employee" in identity and "invoice-reader" in identity and "Session expires" in identity
    page.screenshot(path=str(ARTIFACTS / "signed-in.png"), full_page=True)

    # sign out: the session ends here and at Keycloak (RP-initiated logout), back to our page
    page.click("text=Sign out")
    page.wait_for_url(f"{proxy.url}/.iam/signed-out")
    assert "signed out" in page.inner_text("h1").lower()
    assert "__Host-iam_session" not in {c["name"] for c in page.context.cookies()}

    # the old cookie, replayed, no longer works
    with proxy.client(dev_tls) as client:
        r = client.get("/finance/report", headers={"accept": "application/json",
                                                   "cookie": f"__Host-iam_session={session_cookie['value']}"})
    assert r.status_code == 401
    assert r.json()["reason"] == "session_revoked"  # not "no credential": this one was signed out

    # and Keycloak's own session ended too: the next visit asks for the password again
    page.goto(f"{proxy.url}/finance/report")
    page.wait_for_selector("#username")


def test_api_clients_get_401_never_a_redirect(kc_proxy_factory, keycloak, dev_tls):
    proxy = kc_proxy_factory(register=False)
    with proxy.client(dev_tls) as client:
        as_api = client.get("/finance/x", headers={"accept": "application/json"})
        as_browser = client.get("/finance/x", headers={"accept": "text/html,application/xhtml+xml"})
        with_bearer = client.get("/finance/x", headers={"accept": "text/html", "authorization": "Bearer x.y.z"})
        staff = keycloak.password_grant("iam-test", "alice", "alice-password")
        partner = keycloak.password_grant("iam-partner", "dave", "dave-password",
                                          client_secret="iam-proxy-partner-secret")
        ok = client.get("/finance/x", headers={"authorization": f"Bearer {staff['access_token']}"})
        other_idp = client.get("/finance/x", headers={"authorization": f"Bearer {partner['access_token']}"})
    assert as_api.status_code == 401 and "location" not in as_api.headers
    assert as_browser.status_code == 302
    assert as_browser.headers["location"].startswith("/.iam/login?rd=%2Ffinance%2Fx&auth=staff_browser")
    assert with_bearer.status_code == 401 and "location" not in with_bearer.headers
    # the same route serves API clients with Keycloak bearer tokens...
    assert ok.status_code == 200, ok.text
    assert _header(ok.json(), "x-forwarded-groups") == "finance"
    # ...but a token from the other IdP is refused on a route bound to this one
    assert other_idp.status_code == 401
    assert other_idp.json()["reason"] == "issuer_unknown"


def test_several_idps_user_picks_on_the_chooser(page, kc_proxy_factory, keycloak):
    proxy = kc_proxy_factory()
    page.goto(f"{proxy.url}/partners/home")
    page.wait_for_url(re.compile(re.escape(proxy.url) + r"/\.iam/login\?.*"))
    assert page.inner_text("h1") == "Sign in"
    page.screenshot(path=str(ARTIFACTS / "chooser.png"), full_page=True)
    page.click("text=Sign in with Partner (Keycloak)")
    page.wait_for_url(re.compile(re.escape(keycloak.issuer("iam-partner")) + r"/.*"))
    _sign_in(page, "dave", "dave-password")
    page.wait_for_url(f"{proxy.url}/partners/home")
    assert _header(_upstream_echo(page), "x-forwarded-preferred-username") == "dave"

    # a partner session does not open a route bound to the staff realm: sign-in is asked again there
    page.goto(f"{proxy.url}/finance/report")
    page.wait_for_url(re.compile(re.escape(keycloak.issuer("iam-test")) + r"/.*"))


def test_user_removed_from_group_loses_access_at_next_refresh(page, kc_proxy_factory, keycloak):
    def fast_refresh(config):
        config["authenticators"]["staff_browser"]["refresh_after_seconds"] = 1

    proxy = kc_proxy_factory(fast_refresh)
    admin = keycloak.admin("iam-test")
    user_id = admin.get_user_id("alice")
    finance = admin.get_group_by_path("/finance")["id"]
    page.goto(f"{proxy.url}/finance/ledger")
    _sign_in(page, "alice", "alice-password")
    page.wait_for_url(f"{proxy.url}/finance/ledger")
    try:
        admin.group_user_remove(user_id, finance)
        time.sleep(1.2)
        response = page.goto(f"{proxy.url}/finance/ledger", wait_until="load")
        assert response.status == 403
        page.goto(f"{proxy.url}/.iam/")
        assert "finance" not in page.inner_text("#identity")
    finally:
        admin.group_user_add(user_id, finance)
