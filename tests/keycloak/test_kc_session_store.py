"""The session package on its own: sealing, rotation, ending, one-time values; Redis for real."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

import pytest

from iam_proxy.audit.auditor import Auditor
from iam_proxy.audit.config import AuditSettings
from iam_proxy.authn.identity import Identity
from iam_proxy.authn.jwks import JWKSCache
from iam_proxy.authn.oidc_session import build_browser_login
from iam_proxy.errors import AuthUnavailable
from iam_proxy.portal import Portal
from iam_proxy.routes.matcher import RouteTable
from iam_proxy.session import build_session_manager
from iam_proxy.settings import SessionSettings, parse_settings

SECRET = "unit-test-session-secret-0123456789abcdef"


def in_own_loop(test):
    """Run an async test on a fresh event loop in a worker thread: the session's Playwright (sync API)
    keeps an event loop running on the main thread, where pytest-asyncio could not start another."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, test(*args, **kwargs)).result()
    return run
ALICE = Identity(sub="alice-id", method="oidc", username="alice", groups=("finance",), provider="kc")


def _cookie_value(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


def _headers(set_cookie: str, name: str = "__Host-iam_session") -> dict[str, str]:
    return {"cookie": f"{name}={_cookie_value(set_cookie)}"}


@pytest.fixture(params=["cookie", "redis"])
def manager(request):
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        settings = SessionSettings(secret=SECRET, store="redis", redis={"url": url, "key_prefix": f"t{id(request)}:"})
    else:
        settings = SessionSettings(secret=SECRET, revocation_file=request.getfixturevalue("tmp_path") / "revoked")
    return build_session_manager(settings)


@in_own_loop
async def test_cookie_attributes_and_round_trip(manager):
    session, cookie = await manager.create(identity=ALICE, provider="kc", protocol="oidc",
                                           tokens={"refresh_token": "secret-refresh"})
    assert cookie.startswith("__Host-iam_session=")
    for attribute in ("Path=/", "HttpOnly", "SameSite=Lax", "Secure"):
        assert attribute in cookie
    assert "secret-refresh" not in cookie and "alice" not in cookie  # sealed, not just encoded
    loaded = await manager.load(_headers(cookie))
    assert loaded is not None and loaded.identity == ALICE and loaded.tokens["refresh_token"] == "secret-refresh"
    assert "secret-refresh" not in repr(loaded)
    await manager.close()


@in_own_loop
async def test_login_rotates_the_session_id_and_ends_the_previous_one(manager):
    first, first_cookie = await manager.create(identity=ALICE, provider="kc", protocol="oidc")
    second, second_cookie = await manager.create(identity=ALICE, provider="kc", protocol="oidc", previous=first)
    assert second.id != first.id
    assert await manager.load(_headers(first_cookie)) is None
    assert (await manager.load(_headers(second_cookie))).id == second.id
    await manager.close()


@in_own_loop
async def test_tampered_or_foreign_cookies_are_no_session(manager):
    _, cookie = await manager.create(identity=ALICE, provider="kc", protocol="oidc")
    value = _cookie_value(cookie)
    flipped = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    assert await manager.load({"cookie": f"__Host-iam_session={flipped}"}) is None
    other = build_session_manager(SessionSettings(secret="another-secret-0123456789abcdef-xyz"))
    assert await other.load(_headers(cookie)) is None
    # a value sealed for another cookie name does not open as the session
    login_value = manager.seal({"sid": "x"}, "__Host-iam_oidc_login")
    assert await manager.load({"cookie": f"__Host-iam_session={login_value}"}) is None
    await manager.close()


@in_own_loop
async def test_destroy_and_backchannel_end(manager):
    s1, c1 = await manager.create(identity=ALICE, provider="kc", protocol="oidc", idp_session_id="kc-sid-1")
    s2, c2 = await manager.create(identity=ALICE, provider="kc", protocol="oidc", idp_session_id="kc-sid-2")
    clear = await manager.destroy(s1)
    assert "Max-Age=0" in clear
    assert await manager.lookup(_headers(c1)) == (None, "session_revoked")
    assert await manager.end_idp_session("kc", idp_session_id="kc-sid-2") == 1  # the true count
    assert await manager.lookup(_headers(c2)) == (None, "session_revoked")
    s3, c3 = await manager.create(identity=ALICE, provider="kc", protocol="oidc")
    assert await manager.end_idp_session("kc", sub="alice-id") == 1  # s1 and s2 had ended already
    assert await manager.lookup(_headers(c3)) == (None, "session_revoked")
    await manager.close()


@in_own_loop
async def test_one_time_values(manager):
    assert await manager.consume_once("oidc-state", "abc", 60)
    assert not await manager.consume_once("oidc-state", "abc", 60)
    assert await manager.consume_once("oidc-nonce", "abc", 60)
    await manager.close()


@in_own_loop
async def test_previous_secrets_still_open_cookies():
    old = build_session_manager(SessionSettings(secret=SECRET))
    _, cookie = await old.create(identity=ALICE, provider="kc", protocol="oidc")
    rotated = build_session_manager(SessionSettings(secret="the-new-secret-0123456789abcdef-123",
                                                    previous_secrets=[SECRET]))
    # a cookie store keeps sessions in the cookie: the new key opens what the old one sealed
    assert (await rotated.load(_headers(cookie))).identity == ALICE


@in_own_loop
async def test_redis_unreachable_raises_unavailable():
    from support import free_port

    manager = build_session_manager(SessionSettings(secret=SECRET, store="redis", redis={
        "url": f"redis://127.0.0.1:{free_port()}/0", "timeout_seconds": 0.3}))
    with pytest.raises(AuthUnavailable) as err:
        await manager.create(identity=ALICE, provider="kc", protocol="oidc")
    assert err.value.reason == "session_store_unavailable" and err.value.status == 503
    await manager.close()


def test_settings_refuse_unsafe_sessions():
    with pytest.raises(ValueError, match="at least 32"):
        SessionSettings(secret="short")
    with pytest.raises(ValueError, match="__Host- cookie must be secure"):
        SessionSettings(secret=SECRET, secure=False)
    with pytest.raises(ValueError, match="redis"):
        SessionSettings(secret=SECRET, store="redis")


def _portal() -> Portal:
    settings = parse_settings({
        "identity_providers": [{"id": "kc", "issuer": "https://sso.example/realms/x", "discovery": True,
                                "audiences": ["a"], "client": {"client_id": "iam-proxy"}}],
        "authenticators": {"browser": {"type": "oidc_session", "providers": ["kc"]}},
        "sessions": {"secret": SECRET},
        "routes": [{"id": "app", "match": {"path": "/app/**"}, "upstream": "http://127.0.0.1:1",
                    "authenticators": ["browser"]}]})
    login = build_browser_login(settings, build_session_manager(settings.sessions),
                                {"kc": JWKSCache(settings.identity_providers[0], lambda: None)}, lambda: None)
    return Portal(login, RouteTable(settings.routes), auditor=Auditor(AuditSettings(sinks=[])))


@pytest.mark.parametrize("rd,expected", [
    ("/app/x?y=1", "/app/x?y=1"), ("/app", "/app"), ("/.iam/", "/.iam/"),
    (None, "/"), ("", "/"), ("https://evil.example/app", "/"), ("//evil.example/app", "/"),
    ("/\\evil.example/app", "/"), ("/app/\r\nSet-Cookie: x=y", "/"), ("/other", "/"),
    ("/.iam/logout", "/"), ("javascript:alert(1)", "/"),
])
def test_redirect_allowlist(rd, expected):
    assert _portal().safe_redirect(rd) == expected


def test_oidc_session_config_errors_name_the_key():
    from iam_proxy.errors import ConfigError

    raw = {"identity_providers": [{"id": "kc", "issuer": "https://sso.example/realms/x", "discovery": True,
                                   "audiences": ["a"]}],
           "authenticators": {"browser": {"type": "oidc_session", "providers": ["kc"]}},
           "sessions": {"secret": SECRET},
           "routes": [{"id": "app", "upstream": "http://127.0.0.1:1", "authenticators": ["browser"]}]}
    with pytest.raises(ConfigError, match=r"identity_providers\[0\]\.client"):
        parse_settings(raw)
    raw["identity_providers"][0]["client"] = {"client_id": "iam-proxy"}
    raw.pop("sessions")
    with pytest.raises(ConfigError, match=r"sessions\.secret"):
        parse_settings(raw)
