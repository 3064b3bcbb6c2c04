"""The RFC 7662 response checks, one rule at a time (the real endpoint is in test_kc_introspection.py)."""

from __future__ import annotations

import pytest

from iam_proxy.authn.introspection import IntrospectionAuthenticator
from iam_proxy.core.errors import InvalidCredential
from iam_proxy.settings.authn import IntrospectionAuthenticatorSettings
from iam_proxy.settings.identity import JWTProvider

NOW = 1_800_000_000
PROVIDER = JWTProvider.model_validate({
    "id": "kc", "issuer": "https://sso.example/realms/corp", "discovery": True, "audiences": ["iam-proxy"],
    "preset": {"name": "keycloak", "client_id": "iam-proxy"},
    "client": {"client_id": "introspector", "client_secret": "s3cret"}})
ACTIVE = {"active": True, "sub": "alice-id", "username": "alice", "preferred_username": "alice",
          "scope": "openid invoices:read", "aud": ["iam-proxy", "account"], "client_id": "iam-proxy",
          "token_type": "Bearer", "exp": NOW + 60, "iss": "https://sso.example/realms/corp",
          "realm_access": {"roles": ["employee"]}, "groups": ["finance"]}


def authenticator(**settings) -> IntrospectionAuthenticator:
    cfg = IntrospectionAuthenticatorSettings(type="introspection", provider="kc", audiences=["iam-proxy"],
                                             client_ids=["iam-proxy"], **settings)
    return IntrospectionAuthenticator("opaque", cfg, PROVIDER, http_session=lambda: None, clock=lambda: NOW)


def test_active_token_maps_scopes_groups_and_roles():
    identity, exp = authenticator()._check(dict(ACTIVE), NOW)
    assert identity.method == "introspection" and identity.sub == "alice-id"
    assert identity.scopes == ("openid", "invoices:read")
    assert identity.groups == ("finance",) and identity.roles == ("employee",)
    assert exp == NOW + 60


@pytest.mark.parametrize("change,reason", [
    ({"active": "true"}, "token_inactive"),      # must be the JSON boolean true
    ({"active": 1}, "token_inactive"),
    ({"active": False}, "token_inactive"),
    ({"exp": NOW - 1}, "token_expired"),
    ({"exp": "soon"}, "token_malformed"),
    ({"aud": "someone-else"}, "audience_mismatch"),
    ({"client_id": "another-client"}, "client_not_allowed"),
    ({"token_type": "refresh_token"}, "token_type_not_allowed"),
    ({"iss": "https://evil.example"}, "issuer_mismatch"),
    ({"sub": None}, "subject_missing"),
])
def test_each_rule_refuses(change, reason):
    result = {**ACTIVE, **change}
    with pytest.raises(InvalidCredential) as err:
        authenticator()._check(result, NOW)
    assert err.value.reason == reason and err.value.status == 401


def test_missing_active_is_inactive():
    result = {k: v for k, v in ACTIVE.items() if k != "active"}
    with pytest.raises(InvalidCredential):
        authenticator()._check(result, NOW)
