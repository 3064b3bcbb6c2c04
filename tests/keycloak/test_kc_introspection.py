"""RFC 7662 introspection against Keycloak's real endpoint, with a confidential client."""

from __future__ import annotations

import time

from joserfc import jwt
from joserfc.jwk import KeySet


def _assertion_claims(client, response) -> dict:
    jwks = KeySet.import_key_set(client.get("/.well-known/jwks.json").json())
    headers = {k.lower(): v for k, v in response.json()["headers"].items()}
    return jwt.decode(headers["x-iam-assertion"], jwks, algorithms=["ES256"]).claims


def test_active_token_passes_with_scopes_then_revocation_ends_it(kc_proxy_factory, keycloak, dev_tls):
    proxy = kc_proxy_factory(register=False)
    tokens = keycloak.password_grant("iam-test", "alice", "alice-password")
    bearer = {"authorization": f"Bearer {tokens['access_token']}"}
    with proxy.client(dev_tls) as client:
        ok = client.get("/opaque/orders", headers=bearer)
        assert ok.status_code == 200, ok.text
        claims = _assertion_claims(client, ok)
        assert claims["sub"] and claims.get("groups") == ["finance"]
        # the token was introspected (the proxy never verified its signature itself)
        event = next(e for e in proxy.process.wait_audit(1) if (e.get("route") or {}).get("id") == "opaque")
        assert event["identity"]["method"] == "introspection"
        assert event["identity"]["username"] == "alice"

        # revoke the token at Keycloak: it turns inactive within the cache TTL (2 s here)
        r = client.post(f"{keycloak.issuer('iam-test')}/protocol/openid-connect/revoke",
                        data={"token": tokens["access_token"], "token_type_hint": "access_token",
                              "client_id": "iam-proxy", "client_secret": "iam-proxy-test-secret"})
        assert r.status_code == 200
        time.sleep(2.2)
        gone = client.get("/opaque/orders", headers=bearer)
    assert gone.status_code == 401
    assert gone.json()["reason"] == "token_inactive"


def test_garbage_token_is_401(kc_proxy_factory, dev_tls):
    proxy = kc_proxy_factory(register=False)
    with proxy.client(dev_tls) as client:
        r = client.get("/opaque/orders", headers={"authorization": "Bearer not-a-token-keycloak-knows"})
    assert r.status_code == 401
    assert r.json()["reason"] == "token_inactive"


def test_introspection_down_or_refusing_our_client_fails_closed_with_503(kc_proxy_factory, keycloak, dev_tls, tmp_path):
    def broken(config):
        config["identity_providers"][2]["client"]["client_secret"] = "wrong-secret"

    proxy = kc_proxy_factory(broken, register=False)
    token = keycloak.password_grant("iam-test", "alice", "alice-password")["access_token"]
    with proxy.client(dev_tls) as client:
        refused = client.get("/opaque/orders", headers={"authorization": f"Bearer {token}"})
    assert refused.status_code == 503
    assert refused.json()["reason"] == "introspection_unavailable"

    def unreachable(config):
        from support import free_port

        config["authenticators"]["opaque"]["endpoint"] = f"http://127.0.0.1:{free_port()}/introspect"

    down = kc_proxy_factory(unreachable, register=False)
    with down.client(dev_tls) as client:
        r = client.get("/opaque/orders", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 503
    events = down.process.wait_audit(1)
    assert [e["reason"] for e in events] == ["introspection_unavailable"]
    assert events[0]["status"] == 503 and events[0]["outcome"] == "error"
    assert token not in str(events)  # the token never reaches the audit log
