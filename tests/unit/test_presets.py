"""Each IdP preset maps a realistic token (shaped like the provider's documented tokens) as expected."""

from __future__ import annotations

import pytest

from iam_proxy.authn.mapping import identity_from_claims
from iam_proxy.core.errors import ConfigError, InvalidCredential
from iam_proxy.settings import parse_settings
from iam_proxy.settings.identity import JWTProvider


def provider(preset: dict, issuer: str = "https://idp.example") -> JWTProvider:
    return JWTProvider.model_validate({"id": "idp", "issuer": issuer, "discovery": True,
                                       "audiences": ["api://iam-proxy"], "preset": preset})


KEYCLOAK_ACCESS_TOKEN = {
    "exp": 1795671202, "iat": 1795670902, "jti": "onrtro:358915eb", "iss": "https://sso.example.org/realms/corp",
    "aud": ["iam-proxy", "account"], "sub": "d7b3cfcb-150a-4a1e-8a48-f8f8717b3c44", "typ": "Bearer",
    "azp": "iam-proxy", "sid": "3mc4wvLSma3_BMCD09vLPlzD", "scope": "openid profile email",
    "realm_access": {"roles": ["offline_access", "employee"]},
    "resource_access": {"iam-proxy": {"roles": ["invoice-reader"]}, "account": {"roles": ["manage-account"]}},
    "groups": ["finance"], "preferred_username": "alice", "email": "alice@example.org", "name": "Alice Tester",
}


def test_keycloak_realm_and_client_roles_and_groups():
    p = provider({"name": "keycloak", "client_id": "iam-proxy"})
    identity = identity_from_claims(KEYCLOAK_ACCESS_TOKEN, p.claims, method="jwt", provider="idp")
    assert identity.username == "alice" and identity.email == "alice@example.org"
    assert identity.groups == ("finance",)
    # realm roles, then this client's roles; another client's roles (account) stay out
    assert identity.roles == ("offline_access", "employee", "invoice-reader")
    assert identity.scopes == ("openid", "profile", "email")
    assert identity.attributes["session_state"] == "3mc4wvLSma3_BMCD09vLPlzD"


def test_keycloak_without_client_id_reads_realm_roles_only():
    p = provider({"name": "keycloak"})
    identity = identity_from_claims(KEYCLOAK_ACCESS_TOKEN, p.claims, method="jwt", provider="idp")
    assert identity.roles == ("offline_access", "employee")


ENTRA_V2_TOKEN = {
    "aud": "api://iam-proxy", "iss": "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
    "iat": 1795670902, "nbf": 1795670902, "exp": 1795674502, "aio": "AWQAm/8",
    "azp": "6e74172b-be56-4843-9ff4-e66a39bb12e3", "azpacr": "1", "name": "Abe Lincoln",
    "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474", "preferred_username": "abeli@microsoft.com",
    "rh": "I", "roles": ["Invoices.Read", "Invoices.Approve"], "scp": "access_as_user",
    "groups": ["6f1a4fbd-3b2d-4c80-9cd4-0a7f5b1a0f61", "b8a5c0de-1f2e-4a3b-8c9d-0e1f2a3b4c5d"],
    "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ", "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "uti": "fqiBqXLPj0eQa82S-IYFAA", "ver": "2.0",
}

ENTRA_V1_TOKEN = {
    "aud": "api://iam-proxy", "iss": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
    "iat": 1795670902, "nbf": 1795670902, "exp": 1795674502, "appid": "6e74172b-be56-4843-9ff4-e66a39bb12e3",
    "name": "Abe Lincoln", "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474", "upn": "abeli@microsoft.com",
    "unique_name": "abeli@microsoft.com", "roles": ["Invoices.Read"], "scp": "user_impersonation",
    "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47", "ver": "1.0",
}


def test_entra_v2_roles_groups_tenant_and_stable_user_id():
    p = provider({"name": "entra-id"}, issuer=ENTRA_V2_TOKEN["iss"])
    identity = identity_from_claims(ENTRA_V2_TOKEN, p.claims, method="jwt", provider="idp")
    assert identity.sub == "690222be-ff1a-4d56-abd1-7e4f7d38e474"  # oid, not the pairwise sub
    assert identity.username == "abeli@microsoft.com"
    assert identity.roles == ("Invoices.Read", "Invoices.Approve")
    assert identity.groups == tuple(ENTRA_V2_TOKEN["groups"])
    assert identity.tenant == "72f988bf-86f1-41af-91ab-2d7cd011db47"
    assert identity.scopes == ("access_as_user",)
    assert identity.attributes["app_id"] == "6e74172b-be56-4843-9ff4-e66a39bb12e3"


def test_entra_v1_names_the_user_by_upn():
    p = provider({"name": "entra-id", "token_version": "v1"}, issuer=ENTRA_V1_TOKEN["iss"])
    identity = identity_from_claims(ENTRA_V1_TOKEN, p.claims, method="jwt", provider="idp")
    assert identity.username == "abeli@microsoft.com" and identity.email == "abeli@microsoft.com"
    assert identity.attributes["app_id"] == "6e74172b-be56-4843-9ff4-e66a39bb12e3"
    assert identity.tenant == "72f988bf-86f1-41af-91ab-2d7cd011db47"


ENTRA_OVERAGE = {**{k: v for k, v in ENTRA_V2_TOKEN.items() if k != "groups"},
                 "_claim_names": {"groups": "src1"},
                 "_claim_sources": {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/690222be/getMemberObjects"}}}


def test_entra_groups_overage_is_refused_by_default():
    p = provider({"name": "entra-id"})
    with pytest.raises(InvalidCredential) as err:
        identity_from_claims(ENTRA_OVERAGE, p.claims, method="jwt", provider="idp")
    assert err.value.reason == "claims_incomplete"


def test_entra_groups_overage_ignore_goes_on_without_groups_and_tells_policy():
    p = provider({"name": "entra-id", "groups_overage": "ignore"})
    identity = identity_from_claims(ENTRA_OVERAGE, p.claims, method="jwt", provider="idp")
    assert identity.groups == ()
    assert identity.attributes["groups_overage"] == "src1"


OKTA_ACCESS_TOKEN = {
    "ver": 1, "jti": "AT.0mP4JKAZX1iACIT4vbEDF7LpvDVjxypPMf0D7uX39RE", "iss": "https://example.okta.com/oauth2/default",
    "aud": "api://default", "iat": 1795670902, "exp": 1795674502, "cid": "0oa1v2w3x4y5z6", "uid": "00u1a2b3c4d5e6",
    "scp": ["openid", "profile", "invoices:read"], "sub": "carol@example.com", "groups": ["Everyone", "Finance"],
    "preferred_username": "carol@example.com",
}


def test_okta_groups_and_scopes():
    p = provider({"name": "okta"})
    identity = identity_from_claims(OKTA_ACCESS_TOKEN, p.claims, method="jwt", provider="idp")
    assert identity.sub == "carol@example.com"
    assert identity.groups == ("Everyone", "Finance")
    assert identity.scopes == ("openid", "profile", "invoices:read")
    assert identity.attributes == {"okta_user_id": "00u1a2b3c4d5e6", "client_id": "0oa1v2w3x4y5z6"}


AUTH0_ACCESS_TOKEN = {
    "iss": "https://example.eu.auth0.com/", "sub": "auth0|64b7f0c2a1b2c3d4e5f6a7b8",
    "aud": ["https://api.example.com", "https://example.eu.auth0.com/userinfo"], "iat": 1795670902,
    "exp": 1795757302, "azp": "kL3hN9pQ2rS4tU6vW8xY0zA1", "scope": "openid profile email",
    "permissions": ["read:invoices", "approve:invoices"],
    "https://example.com/roles": ["approver"], "https://example.com/groups": ["finance"],
    "https://example.com/tenant": "acme", "nickname": "dan", "email": "dan@example.com",
}


def test_auth0_namespaced_claims_and_permissions():
    p = provider({"name": "auth0", "namespace": "https://example.com/"})
    identity = identity_from_claims(AUTH0_ACCESS_TOKEN, p.claims, method="jwt", provider="idp")
    assert identity.roles == ("approver",) and identity.groups == ("finance",)
    assert identity.tenant == "acme"
    assert identity.scopes == ("openid", "profile", "email", "read:invoices", "approve:invoices")
    assert identity.username == "dan"


def test_auth0_needs_a_namespace():
    raw = {"identity_providers": [{"id": "a0", "issuer": "https://example.eu.auth0.com/", "discovery": True,
                                   "audiences": ["x"], "preset": {"name": "auth0"}}],
           "authenticators": {"a": {"type": "anonymous"}},
           "routes": [{"id": "r", "upstream": "http://127.0.0.1:1", "authenticators": ["a"]}]}
    with pytest.raises(ConfigError) as err:
        parse_settings(raw)
    assert "namespace" in str(err.value) and "identity_providers[0]" in str(err.value)


PING_ONE_ID_TOKEN = {
    "sub": "5f1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", "aud": "8c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f",
    "iss": "https://auth.pingone.eu/0a7f5b1a-3b2d-4c80-9cd4-6f1a4fbd0f61/as", "iat": 1795670902,
    "exp": 1795674502, "acr": "Single_Factor", "amr": ["pwd"], "auth_time": 1795670900,
    "env": "0a7f5b1a-3b2d-4c80-9cd4-6f1a4fbd0f61", "org": "b1c2d3e4-f5a6-7b8c-9d0e-1f2a3b4c5d6e",
    "preferred_username": "erin", "email": "erin@example.com", "memberOfGroupNames": ["Finance", "Staff"],
    "sid": "a1b2c3d4-e5f6", "client_id": "8c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f",
}


def test_ping_group_names_and_environment_as_tenant():
    p = provider({"name": "ping"})
    identity = identity_from_claims(PING_ONE_ID_TOKEN, p.claims, method="oidc", provider="idp")
    assert identity.groups == ("Finance", "Staff")
    assert identity.tenant == "0a7f5b1a-3b2d-4c80-9cd4-6f1a4fbd0f61"
    assert identity.amr == ("pwd",) and identity.acr == "Single_Factor"


def test_preset_and_explicit_claims_together_are_refused():
    raw = {"identity_providers": [{"id": "k", "issuer": "https://sso.example.org/realms/corp", "discovery": True,
                                   "audiences": ["x"], "preset": {"name": "keycloak"}, "claims": {"sub": "sub"}}],
           "authenticators": {"a": {"type": "anonymous"}},
           "routes": [{"id": "r", "upstream": "http://127.0.0.1:1", "authenticators": ["a"]}]}
    with pytest.raises(ConfigError) as err:
        parse_settings(raw)
    assert "preset or claims" in str(err.value)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError) as err:
        provider({"name": "gitlab"})
    assert "keycloak" in str(err.value)
