"""One decision for every front door (pipeline.py `Pipeline.decide`): forward-auth answers with the
headers the proxy would have set, and `explain` gives the live pipeline's decision, enrichers included.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml
from joserfc import jwt
from joserfc.jwk import KeySet

from iam_proxy.explain import explain
from iam_proxy.settings import load_settings
from peers.slapd import SERVICE_DN, SERVICE_PASSWORD, SUFFIX
from support import upstream_headers

POLICY = """package test.decide

import rego.v1

decision := {"allowed": true, "reasons": ["tenant acme"], "headers": {"x-tenant": "acme"},
	"response_headers_to_add": {"x-decided": "yes"}}
"""
# Every header the proxy sets on the upstream request with this config.
SET_BY_PROXY = ["x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-forwarded-preferred-username",
                "x-forwarded-access-token", "x-tenant"]


def _claims(token: str, jwks: dict) -> dict:
    claims = jwt.decode(token, KeySet.import_key_set(jwks)).claims
    return {k: v for k, v in claims.items() if k not in ("jti", "iat", "nbf", "exp")}


def test_forward_auth_answers_with_the_headers_the_proxy_sets(proxy_factory, proxy_config, policy_dir, issuer):
    (policy_dir / "decide.rego").write_text(POLICY)
    proxy_config["forward_auth"] = {"trusted_peers": ["127.0.0.1/32"]}
    route = proxy_config["routes"][0]
    route.update(pass_access_token=True, policy={"path": "test/decide/decision"})
    proxy = proxy_factory(proxy_config)
    token = issuer.token("alice", ["finance"])
    with proxy.client() as c:
        proxied = c.get("/api/invoices/1", headers={"Authorization": f"Bearer {token}"})
        answered = c.get("/.iam/auth", headers={"Authorization": f"Bearer {token}",
                                                "X-Original-URI": "/api/invoices/1", "X-Original-Method": "GET"})
        jwks = c.get("/.well-known/jwks.json").json()
    assert proxied.status_code == 200 and answered.status_code == 200
    received = upstream_headers(proxied)
    assert {name: received[name] for name in SET_BY_PROXY} == {name: answered.headers[name] for name in SET_BY_PROXY}
    assert received["x-forwarded-access-token"] == token and received["x-tenant"] == "acme"
    # the signed assertion names the same identity (each request has its own id and times)
    assert _claims(received["x-iam-assertion"], jwks) == _claims(answered.headers["x-iam-assertion"], jwks)
    # and what the client gets: the policy's response headers
    assert proxied.headers["x-decided"] == answered.headers["x-decided"] == "yes"


def test_explain_gives_the_live_decision_with_enrichers(proxy_factory, proxy_config, slapd, issuer, tmp_path):
    """The token carries no group; the LDAP enricher adds `finance`, which the policy needs."""
    proxy_config["directories"] = [{
        "id": "corp", "urls": [slapd.ldaps_url], "ca_file": str(slapd.ca_file), "tls_server_name": "localhost",
        "bind_dn": SERVICE_DN, "bind_password": SERVICE_PASSWORD, "user_base_dn": SUFFIX,
        "groups": {"sources": ["member_of"]}}]
    proxy_config["enrichers"] = {"corp-groups": {"type": "ldap", "directory": "corp", "key": "username"}}
    proxy_config["routes"][0]["enrichers"] = ["corp-groups"]
    proxy = proxy_factory(proxy_config)
    headers = {"Authorization": f"Bearer {issuer.token('alice', [])}"}
    with proxy.client() as c:
        live = c.get("/api/invoices/1", headers=headers)
    assert live.status_code == 200
    event = json.loads(Path(proxy.audit_path).read_text().splitlines()[-1])
    assert event["decision"]["allowed"] is True and "finance" in event["identity"]["groups"]

    config = tmp_path / "explain.yaml"
    config.write_text(yaml.safe_dump(proxy_config))
    report = asyncio.run(explain(load_settings(config), "GET", f"{proxy.url}/api/invoices/1", list(headers.items())))
    assert report["identity"]["groups"] == event["identity"]["groups"]
    assert report["decision"]["allowed"] is event["decision"]["allowed"] is True
    assert report["decision"]["reasons"] == event["decision"]["reasons"] == ["granted by role or group"]
    assert report["decision"]["revision"] == event["decision"]["revision"]
    assert report["input"]["identity"]["groups"] == event["identity"]["groups"]
