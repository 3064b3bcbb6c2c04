"""Bearer JWT authentication against the real proxy process: rotation, pinning, claims checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest


def _get(proxy, token: str, path: str = "/api/invoices/1"):
    with proxy.client() as c:
        return c.get(path, headers={"Authorization": f"Bearer {token}"})


def _reason(response) -> str:
    return response.json()["reason"]


def test_jwks_rotation_new_key_accepted_and_removed_key_refused(proxy_factory, proxy_config, issuer):
    proxy_config["identity_providers"][0]["jwks_refresh_seconds"] = 0.5
    proxy = proxy_factory(proxy_config)
    old_token = issuer.token("alice", ["finance"], kid="k1")
    assert _get(proxy, old_token).status_code == 200

    issuer.add_key("k2")  # the issuer rolls its key: new tokens carry a kid the proxy has not seen
    new_token = issuer.token("alice", ["finance"], kid="k2")
    assert _get(proxy, new_token).status_code == 200  # refetched on unknown kid

    issuer.remove_key("k1")  # the old key is retired at the issuer
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _get(proxy, old_token).status_code == 200:
        time.sleep(0.2)
    refused = _get(proxy, old_token)
    assert refused.status_code == 401
    assert _reason(refused) == "key_unknown"
    assert _get(proxy, new_token).status_code == 200


def test_jwks_by_discovery_from_a_real_issuer_endpoint(proxy_factory, proxy_config, issuer, tmp_path):
    """Discovery (`/.well-known/openid-configuration`) served over HTTP by a separate process."""
    from support import PYTHON, Process, free_port, wait_for_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    script = tmp_path / "issuer_server.py"
    script.write_text(
        "import json, sys\nfrom aiohttp import web\n"
        f"JWKS = {str(issuer.jwks_path)!r}\nBASE = {base!r}\n"
        "async def disc(r): return web.json_response({'issuer': BASE, 'jwks_uri': BASE + '/jwks'})\n"
        "async def jwks(r): return web.json_response(json.load(open(JWKS)))\n"
        "app = web.Application(); app.router.add_get('/.well-known/openid-configuration', disc)\n"
        "app.router.add_get('/jwks', jwks)\n"
        f"web.run_app(app, host='127.0.0.1', port={port}, print=None)\n")
    server = Process([PYTHON, str(script)], tmp_path / "issuer.log")
    try:
        wait_for_port(port, server.proc)
        provider = proxy_config["identity_providers"][0]
        provider.pop("jwks_file")
        provider.update({"issuer": base, "discovery": True})
        proxy = proxy_factory(proxy_config)
        issuer.issuer = base
        assert _get(proxy, issuer.token("alice", ["finance"])).status_code == 200
        issuer.add_key("k2")
        assert _get(proxy, issuer.token("alice", ["finance"], kid="k2")).status_code == 200
    finally:
        server.stop()


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_refused(proxy, issuer):
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": "iam-proxy", "sub": "mallory", "exp": now + 600, "groups": ["admin"]}
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    r = _get(proxy, token)
    assert r.status_code == 401
    assert _reason(r) == "algorithm_not_allowed"
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_hs256_signed_with_the_public_key_is_refused(proxy, issuer):
    """The classic algorithm-confusion attack: HMAC keyed with the issuer's public RSA key."""
    public_pem = issuer.keys["k1"].as_pem(private=False)
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": "iam-proxy", "sub": "mallory", "exp": now + 600, "groups": ["admin"]}
    signing_input = f"{_b64({'alg': 'HS256', 'kid': 'k1', 'typ': 'JWT'})}.{_b64(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    r = _get(proxy, token)
    assert r.status_code == 401
    assert _reason(r) == "algorithm_not_allowed"


@pytest.mark.parametrize("case, claims, reason", [
    ("wrong audience", {"aud": "another-service"}, "audience_mismatch"),
    ("expired", {"ttl": -120}, "token_expired"),
    ("not yet valid", {"nbf": int(time.time()) + 3600}, "token_not_yet_valid"),
])
def test_claims_are_checked(proxy, issuer, case, claims, reason):
    ttl = claims.pop("ttl", 3600)
    token = issuer.token("alice", ["finance"], ttl=ttl, **claims)
    r = _get(proxy, token)
    assert r.status_code == 401, case
    assert _reason(r) == reason


def test_unknown_issuer_is_refused(proxy, tmp_path):
    from support import DevIssuer

    stranger = DevIssuer(tmp_path / "stranger", issuer="https://evil.example")
    r = _get(proxy, stranger.token("alice", ["finance"]))
    assert r.status_code == 401
    assert _reason(r) == "issuer_unknown"


def test_token_signed_by_a_key_the_issuer_never_published_is_refused(proxy, issuer, tmp_path):
    from support import DevIssuer

    impostor = DevIssuer(tmp_path / "impostor", kid="k1")  # same kid and issuer, different key
    r = _get(proxy, impostor.token("alice", ["finance"]))
    assert r.status_code == 401
    assert _reason(r) == "bad_signature"


@pytest.mark.parametrize("value", ["Bearer not-a-jwt", "Bearer a.b.c", "Bearer"])
def test_malformed_tokens_are_401_not_500(proxy, value):
    with proxy.client() as c:
        r = c.get("/api/invoices/1", headers={"Authorization": value})
    assert r.status_code == 401
    assert _reason(r) == "token_malformed"


def test_bad_token_never_falls_back_to_anonymous(proxy, issuer):
    """The public route accepts anonymous callers, but a bad token there is still a 401."""
    expired = issuer.token("alice", [], ttl=-120)
    with proxy.client() as c:
        assert c.get("/public/x").status_code == 200
        r = c.get("/public/x", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401
    assert _reason(r) == "token_expired"


@pytest.mark.parametrize("claims", [
    {"preferred_username": "alice\r\nX-Forwarded-User: admin"},
    {"email": "alice@example.org\u2028x"},
    {"groups": ["finance,admin"]},
])
def test_identities_that_cannot_travel_in_headers_are_refused(proxy, issuer, claims):
    groups = claims.pop("groups", ["finance"])
    r = _get(proxy, issuer.token("alice", groups, **claims))
    assert r.status_code == 401
    assert _reason(r) == "identity_unsafe"
