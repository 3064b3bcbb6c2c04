"""Sessions shared by replicas through Redis, back-channel logout from Keycloak, and the login state's
single use: all against the real Keycloak, Redis and Chromium."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import httpx


def _sign_in(page, proxy_url: str, path: str, username: str = "alice", password: str = "alice-password") -> str:
    """Signs in through the browser; returns the session cookie's value."""
    page.goto(f"{proxy_url}{path}")
    page.wait_for_selector("#username")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#kc-login")
    page.wait_for_url(f"{proxy_url}{path}")
    return next(c["value"] for c in page.context.cookies() if c["name"] == "__Host-iam_session")


def _api_get(proxy, dev_tls, path: str, cookie: str) -> httpx.Response:
    with proxy.client(dev_tls) as client:
        return client.get(path, headers={"accept": "application/json", "cookie": f"__Host-iam_session={cookie}"})


def test_redis_sessions_are_shared_by_replicas_and_logout_ends_them_everywhere(
        page, kc_proxy_factory, keycloak, dev_tls, redis_url):
    a = kc_proxy_factory(register=False, store="redis", redis={"url": redis_url})
    b = kc_proxy_factory(register=False, store="redis", redis={"url": redis_url})
    keycloak.register_proxy("iam-test", a.url, b.url)
    cookie = _sign_in(page, a.url, "/finance/q1")
    assert len(cookie) < 200  # only a sealed ticket, the session itself is in Redis

    on_b = _api_get(b, dev_tls, "/finance/q1", cookie)
    assert on_b.status_code == 200, on_b.text
    assert {k.lower(): v for k, v in on_b.json()["headers"].items()}["x-forwarded-groups"] == "finance"
    with b.client(dev_tls) as client:
        info = client.get("/.iam/userinfo", headers={"cookie": f"__Host-iam_session={cookie}"}).json()
    assert info["identity"]["username"] == "alice" and info["session"]["provider"] == "kc"
    assert "tokens" not in json.dumps(info) and "refresh_token" not in json.dumps(info)

    with a.client(dev_tls) as client:
        out = client.post("/.iam/logout", headers={"cookie": f"__Host-iam_session={cookie}"})
    assert out.status_code == 303
    assert out.headers["location"].startswith(keycloak.issuer("iam-test") + "/protocol/openid-connect/logout?")
    assert "id_token_hint=" in out.headers["location"]
    assert "__Host-iam_session=;" in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
    assert _api_get(b, dev_tls, "/finance/q1", cookie).status_code == 401


def test_redis_down_is_503_and_audited_never_anonymous(kc_proxy_factory, dev_tls):
    from kc_support import SESSION_SECRET
    from iam_proxy.session._seal import Sealer
    from support import free_port

    proxy = kc_proxy_factory(register=False, store="redis",
                             redis={"url": f"redis://127.0.0.1:{free_port()}/0", "timeout_seconds": 0.5})
    ticket = Sealer(SESSION_SECRET).seal(b'{"sid": "some-session"}', "__Host-iam_session")
    r = _api_get(proxy, dev_tls, "/finance/q1", ticket)
    assert r.status_code == 503
    assert r.json()["reason"] == "session_store_unavailable"
    events = proxy.process.wait_audit(1)
    assert events[-1]["reason"] == "session_store_unavailable" and events[-1]["outcome"] == "error"
    assert ticket not in json.dumps(events)


def test_backchannel_logout_from_keycloak_ends_the_session(page, kc_proxy_factory, keycloak, dev_tls):
    proxy = kc_proxy_factory()
    cookie = _sign_in(page, proxy.url, "/finance/q2")
    assert _api_get(proxy, dev_tls, "/finance/q2", cookie).status_code == 200
    # alice signs out at Keycloak itself (not through the proxy); Keycloak tells the proxy over the
    # back channel, server to server
    page.goto(f"{keycloak.issuer('iam-test')}/protocol/openid-connect/logout")
    page.click("#kc-logout")
    page.wait_for_load_state()
    deadline = time.monotonic() + 10
    status = 200
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.3)
        status = _api_get(proxy, dev_tls, "/finance/q2", cookie).status_code
    assert status == 401
    assert "ended 1 session(s)" in proxy.process.process.logs()  # the true count, with the cookie store
    events = proxy.process.wait_audit(3)
    assert any(e["http"]["path"] == "/.iam/backchannel-logout" and e["status"] == 200 for e in events)


def test_callback_state_is_single_use_and_bound_to_the_browser(page, kc_proxy_factory, keycloak, dev_tls):
    proxy = kc_proxy_factory()
    seen: list[tuple[str, str]] = []

    def remember(request):
        if "/.iam/callback" in request.url:
            seen.append((request.url, request.all_headers().get("cookie", "")))

    page.on("request", remember)
    _sign_in(page, proxy.url, "/finance/q3")
    callback_url, cookie_header = seen[0]
    login_cookie = next(c for c in cookie_header.split("; ") if c.startswith("__Host-iam_oidc_login="))
    with proxy.client(dev_tls) as client:
        replayed = client.get(callback_url, headers={"cookie": login_cookie, "accept": "text/html"})
        other_browser = client.get(callback_url, headers={"accept": "application/json"})
    assert replayed.status_code == 400
    assert "state_replayed" in replayed.text and 'id="error-id"' in replayed.text
    assert replayed.headers["content-security-policy"].startswith("default-src 'none'")
    assert other_browser.status_code == 400
    assert other_browser.json()["reason"] == "login_state_missing"


def test_redirect_after_login_to_another_site_falls_back_to_root(page, kc_proxy_factory):
    """The full allowlist is in test_kc_session_store.py::test_redirect_allowlist; this is the real flow."""
    proxy = kc_proxy_factory()
    page.goto(f"{proxy.url}/.iam/login?{urlencode({'rd': 'https://evil.example/finance/x', 'auth': 'staff_browser'})}")
    page.wait_for_selector("#username")
    page.fill("#username", "bob")
    page.fill("#password", "bob-password")
    with page.expect_response(lambda r: "/.iam/callback" in r.url) as callback:
        page.click("#kc-login")
    assert callback.value.headers["location"] == "/"
