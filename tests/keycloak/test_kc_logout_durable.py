"""Logout holds with the default cookie store: across a restart of the proxy (the revocation file)
and across replicas sharing Redis; the refused cookie says `session_revoked`, not `credential_missing`.
Real Keycloak, Chromium, Redis and proxy processes."""

from __future__ import annotations

import time

from test_kc_sessions import _api_get, _sign_in


def _log_out(proxy, dev_tls, cookie: str) -> None:
    with proxy.client(dev_tls) as client:
        out = client.post("/.iam/logout", headers={"cookie": f"__Host-iam_session={cookie}"})
    assert out.status_code == 303, out.text


def _assert_revoked(proxy, dev_tls, cookie: str) -> None:
    refused = _api_get(proxy, dev_tls, "/finance/q1", cookie)
    assert refused.status_code == 401, refused.text
    assert refused.json()["reason"] == "session_revoked"
    assert "__Host-iam_session=;" in refused.headers["set-cookie"]  # the dead cookie is cleared
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            e.get("reason") == "session_revoked" for e in proxy.process.audit_events()):
        time.sleep(0.1)
    assert any(e.get("reason") == "session_revoked" and e["status"] == 401 for e in proxy.process.audit_events())


def test_a_logged_out_cookie_stays_refused_after_a_restart(page, kc_proxy_factory, proxy_factory, dev_tls):
    proxy = kc_proxy_factory()
    ended = _sign_in(page, proxy.url, "/finance/q1")
    _log_out(proxy, dev_tls, ended)  # the browser keeps its copy of the cookie, as an attacker would
    page.context.clear_cookies()
    kept = _sign_in(page, proxy.url, "/finance/q1")  # Keycloak's SSO session signs alice in again
    assert kept != ended
    _assert_revoked(proxy, dev_tls, ended)

    proxy.process.stop()
    restarted = type(proxy)(proxy_factory(proxy.process.config, name="kc-proxy-restarted"))  # same config, port
    _assert_revoked(restarted, dev_tls, ended)
    assert _api_get(restarted, dev_tls, "/finance/q1", kept).status_code == 200
    assert _api_get(restarted, dev_tls, "/finance/q1", "not-a-cookie").json()["reason"] == "credential_missing"


def test_logout_on_one_replica_is_refused_by_the_other_through_redis(page, kc_proxy_factory, keycloak, dev_tls,
                                                                      redis_url, tmp_path):
    # the default cookie store; Redis only holds the revocation list (each replica its own file
    # would not do: they are on "different hosts" here)
    a = kc_proxy_factory(register=False, redis={"url": redis_url, "key_prefix": "durable:"},
                         revocation_file=str(tmp_path / "a-revoked"))
    b = kc_proxy_factory(register=False, redis={"url": redis_url, "key_prefix": "durable:"},
                         revocation_file=str(tmp_path / "b-revoked"))
    keycloak.register_proxy("iam-test", a.url, b.url)
    cookie = _sign_in(page, a.url, "/finance/q1")
    assert len(cookie) > 400  # the whole session is in the cookie
    assert _api_get(b, dev_tls, "/finance/q1", cookie).status_code == 200
    _log_out(a, dev_tls, cookie)
    _assert_revoked(b, dev_tls, cookie)
