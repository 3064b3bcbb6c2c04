"""The Keycloak enricher (python-keycloak) against the real Keycloak: facts the token does not carry."""

from __future__ import annotations

from joserfc import jwt
from joserfc.jwk import KeySet


def _with_enricher(keycloak, **overrides):
    def tweak(config):
        config["enrichers"] = {"kc_details": {
            "type": "keycloak", "server_url": keycloak.base_url, "realm": "iam-test", "client_id": "iam-enricher",
            "client_secret": "iam-enricher-test-secret", "providers": ["kc"], "client_roles": ["billing"],
            **overrides}}
        config["routes"][0]["enrichers"] = ["kc_details"]
    return tweak


def test_group_paths_and_other_clients_roles_are_added(kc_proxy_factory, keycloak, dev_tls):
    proxy = kc_proxy_factory(_with_enricher(keycloak), register=False)
    token = keycloak.password_grant("iam-test", "alice", "alice-password")["access_token"]
    with proxy.client(dev_tls) as client:
        r = client.get("/finance/x", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        jwks = KeySet.import_key_set(client.get("/.well-known/jwks.json").json())
    headers = {k.lower(): v for k, v in r.json()["headers"].items()}
    claims = jwt.decode(headers["x-iam-assertion"], jwks, algorithms=["ES256"]).claims
    # the token says "finance"; Keycloak adds the full path and the billing client's role
    assert claims["groups"] == ["finance", "/finance"]
    assert "billing:payer" in claims["roles"] and "invoice-reader" in claims["roles"]


def test_enricher_refused_by_keycloak_fails_closed(kc_proxy_factory, keycloak, dev_tls):
    proxy = kc_proxy_factory(_with_enricher(keycloak, client_secret="wrong"), register=False)
    token = keycloak.password_grant("iam-test", "alice", "alice-password")["access_token"]
    with proxy.client(dev_tls) as client:
        r = client.get("/finance/x", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 503
    assert r.json()["reason"] == "enricher_unavailable"
