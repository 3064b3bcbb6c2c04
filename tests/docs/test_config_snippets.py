"""The config, shell, Rego and JavaScript snippets of docs/deployment.md, configuration.md, x509.md,
ldap.md, kerberos.md, apikeys.md and idp/*.md, run as written: config fragments through the real
settings loader (with only the example paths under /etc/iam-proxy/ pointed at a temp dir, and the
context a fragment names, such as the providers it refers to), commands with bash, policies with the
real OPA, the Auth0 action with node. The nginx, Caddy and Traefik snippets run in
tests/integration/test_forward_auth_fronts.py and test_x509_front_proxy.py; the Kerberos ones against a
real KDC in tests/integration/test_kerberos.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from snippets import snippet
from support import PYTHON, opa_binary

from iam_proxy.core.errors import ConfigError
from iam_proxy.core.networks import TrustedNetworks
from iam_proxy.forward.headers import HeaderRewriter
from iam_proxy.settings import load_settings, Settings

ENV = {"IAM_PROXY_SESSION_SECRET": "s" * 40, "IAM_PROXY_APIKEY_PEPPER": "p" * 32, "LDAP_BIND_PASSWORD": "x",
       "AD_BIND_PASSWORD": "x", "KEYCLOAK_CLIENT_SECRET": "x", "KEYCLOAK_INTROSPECTION_SECRET": "x",
       "KEYCLOAK_ENRICHER_SECRET": "x", "AUTH0_CLIENT_SECRET": "x", "ENTRA_CLIENT_SECRET": "x",
       "OKTA_CLIENT_SECRET": "x", "PING_CLIENT_SECRET": "x", "HEC_TOKEN": "x", "APIKEY_PEPPER": "x"}


def provider(pid: str, client: bool = False) -> dict[str, Any]:
    out = {"id": pid, "issuer": f"https://{pid}.example", "jwks_file": "/dev/null", "audiences": ["api"]}
    return {**out, "client": {"client_id": pid, "client_secret": "x"}} if client else out


BASE = {"authenticators": {"base": {"type": "anonymous"}},
        "routes": [{"id": "base", "match": {"path": "/zz-base/**"}, "upstream": "http://127.0.0.1:9",
                    "authenticators": ["base"]}]}


def merged(fragment: dict[str, Any], around: dict[str, Any]) -> dict[str, Any]:
    """The fragment over its context: mappings merge, the fragment's lists replace the context's,
    except identity providers, which add up."""
    out = json.loads(json.dumps({**BASE, **around}))
    for key, value in fragment.items():
        if key == "identity_providers":
            ids = {p["id"] for p in value}
            out[key] = [p for p in out.get(key, []) if p["id"] not in ids] + value
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def as_written(name: str, tmp: Path) -> str:
    """The snippet, with the example directory /etc/iam-proxy/ pointed at `tmp`."""
    return snippet(name).text.replace("/etc/iam-proxy/", f"{tmp}/")


def load(name: str, tmp: Path, monkeypatch, around: dict[str, Any] | None = None, wrap=None) -> Settings:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    fragment = yaml.safe_load(as_written(name, tmp))
    if wrap is not None:
        fragment = wrap(fragment)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(merged(fragment, around or {})))
    return load_settings(path)


# ---------------------------------------------------------------- configuration.md


def test_env_interpolation(tmp_path, monkeypatch):
    around = {"authenticators": {"bearer": {"type": "anonymous"}}}
    settings = load("config-env-interpolation", tmp_path, monkeypatch, around)
    assert settings.routes[0].upstream == "http://127.0.0.1:9000"
    assert settings.secrets["apikey_pepper"].get_secret_value() == "x"
    assert "x" not in repr(settings.secrets)
    monkeypatch.setenv("ERP_URL", "http://erp.internal:8080")
    monkeypatch.delenv("APIKEY_PEPPER")
    with pytest.raises(ConfigError, match=r"secrets.apikey_pepper: environment variable APIKEY_PEPPER is not set"):
        load_settings(tmp_path / "config-env-interpolation.yaml")


def test_claims_mapping(tmp_path, monkeypatch):
    settings = load("config-claims", tmp_path, monkeypatch,
                    wrap=lambda claims: {"identity_providers": [{**provider("corp"), **claims}]})
    claims = settings.identity_providers[0].claims
    assert claims.roles == ["realm_access.roles", "resource_access.my-api.roles"]
    assert claims.tenant == "tid" and claims.attributes == {"department": "department"}


def test_authenticators(tmp_path, monkeypatch):
    settings = load("config-authenticators", tmp_path, monkeypatch,
                    {"identity_providers": [provider("dev"), provider("corp")]})
    assert settings.authenticators["bearer"].providers == ["dev", "corp"]


def test_routes(tmp_path, monkeypatch):
    settings = load("config-routes", tmp_path, monkeypatch,
                    {"authenticators": {"bearer": {"type": "anonymous"}}})
    route = settings.routes[0]
    assert route.match.methods == ["GET", "POST"] and route.labels == {"team": "finance"}


def test_identity_headers(tmp_path, monkeypatch):
    settings = load("config-identity-headers", tmp_path, monkeypatch)
    spoofed = HeaderRewriter(settings.identity_headers, TrustedNetworks([])).spoofed
    for name in ("X-Acme-User", "X_Acme_User", "x.acme.user", "X-Partner-Tenant", "X-Forwarded-User"):
        assert name in spoofed, name
    assert "X-Tenant" not in spoofed


def test_audit(tmp_path, monkeypatch):
    settings = load("config-audit", tmp_path, monkeypatch)
    assert [s.type for s in settings.audit.sinks] == ["file", "stdout", "syslog", "http"]


# ---------------------------------------------------------------- deployment.md


def test_reverse_proxy_listeners(tmp_path, monkeypatch):
    settings = load("deployment-reverse-proxy", tmp_path, monkeypatch)
    assert settings.listeners.proxy.tls is not None and settings.listeners.trusted_proxies == ["10.0.0.0/8"]


def test_forward_auth_block(tmp_path, monkeypatch):
    settings = load("forward-auth-config", tmp_path, monkeypatch)
    assert settings.forward_auth.only and settings.forward_auth.trusted_peers == ["127.0.0.1/32"]


# ---------------------------------------------------------------- x509.md, ldap.md, kerberos.md


X509_AROUND = {"identity_providers": [provider("corp")], "authenticators": {"bearer": {"type": "jwt",
                                                                                      "providers": ["corp"]}}}


def test_x509_tls_listener(tmp_path, monkeypatch):
    settings = load("x509-tls-listener", tmp_path, monkeypatch, {"identity_providers": [provider("corp")]})
    assert settings.listeners.proxy.tls.client_auth == "optional"
    assert [r.authenticators for r in settings.routes] == [["mtls"], ["mtls", "bearer"]]


def test_x509_behind_a_front_proxy(tmp_path, monkeypatch):
    settings = load("x509-behind-front-proxy", tmp_path, monkeypatch)
    assert settings.authenticators["edge-cert"].sources == ["xfcc", "ssl_client_cert"]


def test_x509_mapping(tmp_path, monkeypatch):
    settings = load("x509-mapping", tmp_path, monkeypatch)
    assert [rule.source for rule in settings.authenticators["mtls"].mapping] == ["san_uri", "san_email", "subject_cn"]


@pytest.mark.parametrize("name", ["ldap-openldap", "ldap-pool-and-caches", "ldap-groups", "ldap-active-directory"])
def test_ldap_directories(tmp_path, monkeypatch, name):
    settings = load(name, tmp_path, monkeypatch)
    assert settings.directories[0].urls[0].startswith("ldaps://")


def test_ldap_enrichers(tmp_path, monkeypatch):
    around = {**X509_AROUND, "authenticators": {**X509_AROUND["authenticators"], "mtls": {"type": "x509"}}}
    around["directories"] = yaml.safe_load(snippet("ldap-openldap").text)["directories"]
    settings = load("ldap-enrichers", tmp_path, monkeypatch, around)
    assert settings.routes[0].enrichers == ["cert-groups", "corp-groups"]


def test_kerberos_config(tmp_path, monkeypatch):
    settings = load("kerberos-config", tmp_path, monkeypatch, {"identity_providers": [provider("corp")]})
    assert settings.authenticators["kerberos"].realm_tenants == {"EMEA.EXAMPLE.ORG": "emea"}


# ---------------------------------------------------------------- apikeys.md


def test_apikey_configs(tmp_path, monkeypatch):
    settings = load("apikey-config", tmp_path, monkeypatch, {"identity_providers": [provider("corp")]})
    assert settings.authenticators["keys"].header == "X-API-Key"
    assert load("apikey-authorization-scheme", tmp_path, monkeypatch).authenticators["keys"].scheme == "ApiKey"


def bash(script: str, tmp: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = f"{Path(PYTHON).parent}:{os.environ['PATH']}"
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=tmp, env={**os.environ, "PATH": path, **(env or {})})


def test_apikey_commands_create_list_and_revoke(tmp_path):
    script = as_written("apikey-pepper", tmp_path) + as_written("apikey-manage", tmp_path)
    result = bash(script, tmp_path)
    assert result.returncode == 0, result.stderr
    key = re.search(r"^iak_([0-9a-f]{12})_\S{43}$", result.stdout, re.M)
    assert key, result.stdout
    assert re.search(rf"^{key.group(1)}\s+active\s+erp-connector", result.stdout, re.M)
    assert "iak_" not in result.stdout.split(key.group(0))[1]  # list never shows keys
    revoke = bash(as_written("apikey-revoke", tmp_path).replace("3f9a1c2b7d4e", key.group(1)), tmp_path)
    assert revoke.returncode == 0, revoke.stderr
    assert f"revoked key {key.group(1)} of erp-connector" in revoke.stdout


# ---------------------------------------------------------------- Rego snippets, with the real OPA


def opa_eval(name: str, query: str, policy_input: dict[str, Any], tmp: Path) -> Any:
    (tmp / "policy.rego").write_text(snippet(name).text)
    (tmp / "input.json").write_text(json.dumps(policy_input))
    result = subprocess.run([opa_binary(), "eval", "--format", "json", "-d", str(tmp / "policy.rego"),
                             "-i", str(tmp / "input.json"), query], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    expressions = json.loads(result.stdout).get("result", [{}])[0].get("expressions", [{}])
    return expressions[0].get("value")


def test_apikey_policy(tmp_path):
    allowed = {"identity": {"method": "apikey", "scopes": ["invoices:read"]},
               "attributes": {"request": {"http": {"method": "GET"}}}}
    assert opa_eval("apikey-policy", "data.iam.authz.decision", allowed, tmp_path) == {"allowed": True}
    writing = {**allowed, "attributes": {"request": {"http": {"method": "POST"}}}}
    assert opa_eval("apikey-policy", "data.iam.authz.decision", writing, tmp_path) is None


def test_x509_policy(tmp_path):
    partner = {"identity": {"method": "x509", "cert": {"issuer": "CN=Partner CA,O=Partner",
                                                       "sans": {"dns": ["erp.partner.example"]}}}}
    assert opa_eval("x509-policy", "data.partners.authz.allow", partner, tmp_path) is True
    other = {"identity": {"method": "x509", "cert": {"issuer": "CN=Other CA", "sans": {"dns": ["erp.partner.example"]}}}}
    assert opa_eval("x509-policy", "data.partners.authz.allow", other, tmp_path) is False


def test_entra_overage_policy(tmp_path):
    overage = {"identity": {"attributes": {"groups_overage": True}}}
    assert opa_eval("entra-overage-policy", "data.iam.entra.groups_missing", overage, tmp_path) is True
    assert opa_eval("entra-overage-policy", "data.iam.entra.groups_missing", {"identity": {"attributes": {}}},
                    tmp_path) is None


# ---------------------------------------------------------------- idp/*.md


def test_auth0_action_sets_the_namespaced_claims_the_preset_reads(tmp_path):
    (tmp_path / "action.js").write_text(snippet("auth0-action").text)
    harness = """
const action = require(process.argv[2]);
const claims = {idToken: {}, accessToken: {}};
const api = {idToken: {setCustomClaim: (k, v) => claims.idToken[k] = v},
             accessToken: {setCustomClaim: (k, v) => claims.accessToken[k] = v}};
const event = {authorization: {roles: ["admin"]}, user: {app_metadata: {groups: ["finance"]}}, organization: {name: "acme"}};
action.onExecutePostLogin(event, api).then(() => console.log(JSON.stringify(claims)));
"""
    (tmp_path / "run.js").write_text(harness)
    result = subprocess.run(["node", str(tmp_path / "run.js"), str(tmp_path / "action.js")], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    access = json.loads(result.stdout)["accessToken"]
    assert access == {"https://example.com/roles": ["admin"], "https://example.com/groups": ["finance"],
                      "https://example.com/tenant": "acme"}
    from iam_proxy.authn.mapping import identity_from_claims  # the preset reads what the action wrote
    from iam_proxy.settings.presets import preset_claims
    from iam_proxy.settings.identity import ClaimMapping, ClaimPreset

    mapping = ClaimMapping(**preset_claims(ClaimPreset(name="auth0", namespace="https://example.com/")))
    identity = identity_from_claims({"sub": "auth0|1", **access}, mapping, method="jwt", provider="auth0")
    assert identity.roles == ("admin",) and identity.groups == ("finance",) and identity.tenant == "acme"


SESSIONS = {"sessions": {"secret": "${IAM_PROXY_SESSION_SECRET}"}}


@pytest.mark.parametrize("name, around", [
    ("auth0-config", {}),
    ("entra-config", {}),
    ("entra-v1-and-v2", {}),
    ("okta-config", {}),
    ("ping-config", {}),
    ("ping-with-entra", {"identity_providers": [provider("ping", client=True), provider("entra", client=True)],
                         **SESSIONS}),
    ("keycloak-config", {}),
    ("keycloak-redis-sessions", {}),
    ("keycloak-enricher", {"identity_providers": [provider("keycloak", client=True)], **SESSIONS,
                           "authenticators": {"api_token": {"type": "jwt", "providers": ["keycloak"]},
                                              "browser": {"type": "oidc_session", "providers": ["keycloak"]}}}),
])
def test_identity_provider_configs(tmp_path, monkeypatch, name, around):
    settings = load(name, tmp_path, monkeypatch, around)
    assert settings.identity_providers or settings.sessions.store == "redis"


def test_saml_quick_start_keys_config_and_metadata(tmp_path, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    keys = bash(as_written("saml-sp-keys", tmp_path), tmp_path)
    assert keys.returncode == 0, keys.stderr
    (tmp_path / "config.yaml").write_text(as_written("saml-config", tmp_path))
    settings = load_settings(tmp_path / "config.yaml")
    assert settings.authenticators["corp_sso"].preset == "entra"
    metadata = bash(as_written("saml-metadata-command", tmp_path), tmp_path, ENV)
    assert metadata.returncode == 0, metadata.stderr
    xml = (tmp_path / "iam-proxy-sp.xml").read_text()
    assert 'entityID="https://apps.example.com/.iam/saml/metadata"' in xml
    assert "https://apps.example.com/.iam/saml/acs" in xml


def test_saml_mapping(tmp_path, monkeypatch):
    settings = load("saml-mapping", tmp_path, monkeypatch, SESSIONS)
    mapping = settings.authenticators["corp_sso"].mapping
    assert mapping.groups == ["memberOf"] and mapping.attributes == {"department": "department",
                                                                     "cost_center": "costCenter"}
