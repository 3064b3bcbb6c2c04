"""Claim mappings for well-known identity providers, as data.

A provider's `preset` fills its `claims` (a ClaimMapping) from the tables below, before validation;
`iam-proxy check` shows the result. Each preset is tested against a realistic token in
tests/unit/test_presets.py, and docs/idp/<provider>.md shows the configuration to paste.

- keycloak: realm roles (`realm_access.roles`), client roles (`resource_access.<client>.roles`,
  when `client_id` is given), `groups` (the group-membership mapper, names without full path).
- entra-id: app roles (`roles`), group object ids (`groups`), tenant (`tid`); v2 tokens name the user
  in `preferred_username`, v1 tokens in `upn`. When a user is in too many groups Entra leaves
  `groups` out and sends `_claim_names.groups` instead ("groups overage"): `deny` refuses such a token
  (authorization by group would be wrong), `ignore` goes on without groups and exposes
  `attributes.groups_overage` to policy.
- okta: `groups` (a groups claim on the authorization server), scopes in `scp`, `cid` as client.
- auth0: custom claims must be namespaced (`<namespace>roles`, `<namespace>groups`); RBAC
  `permissions` count as scopes.
- ping: PingOne `memberOfGroupNames` (or PingFederate `groups`), environment id `env` as tenant.
"""

from __future__ import annotations

from typing import Any

PRESET_NAMES = ("keycloak", "entra-id", "okta", "auth0", "ping")


def _keycloak(client_id: str | None, **_: Any) -> dict[str, Any]:
    roles = ["realm_access.roles"]
    if client_id:
        roles.append(f"resource_access.{client_id}.roles")
    return {"sub": "sub", "username": "preferred_username", "email": "email", "name": "name",
            "groups": ["groups"], "roles": roles, "scopes": ["scope"],
            "attributes": {"session_state": "sid", "authorized_party": "azp"}}


def _entra(token_version: str = "v2", groups_overage: str = "deny", **_: Any) -> dict[str, Any]:
    mapping: dict[str, Any] = {
        "sub": "oid",  # `sub` is pairwise per application; `oid` is the user's id in the tenant
        "username": "preferred_username" if token_version == "v2" else "upn",
        "email": "email" if token_version == "v2" else "upn",
        "name": "name",
        "groups": ["groups"], "roles": ["roles"], "scopes": ["scp"], "tenant": "tid",
        "attributes": {"app_id": "azp" if token_version == "v2" else "appid", "object_id": "oid"},
    }
    if groups_overage == "deny":
        mapping["reject_if_present"] = ["_claim_names.groups"]
    else:
        mapping["attributes"]["groups_overage"] = "_claim_names.groups"
    return mapping


def _okta(**_: Any) -> dict[str, Any]:
    return {"sub": "sub", "username": "preferred_username", "email": "email", "name": "name",
            "groups": ["groups"], "roles": [], "scopes": ["scp", "scope"],
            "attributes": {"okta_user_id": "uid", "client_id": "cid"}}


def _auth0(namespace: str | None, **_: Any) -> dict[str, Any]:
    if not namespace:
        raise ValueError("preset auth0 needs namespace (the prefix of your custom claims, e.g. "
                         "'https://example.com/')")
    return {"sub": "sub", "username": "nickname", "email": "email", "name": "name",
            "groups": [f"{namespace}groups"], "roles": [f"{namespace}roles"],
            "scopes": ["scope", "permissions"], "tenant": f"{namespace}tenant",
            "attributes": {"authorized_party": "azp"}}


def _ping(**_: Any) -> dict[str, Any]:
    return {"sub": "sub", "username": "preferred_username", "email": "email", "name": "name",
            "groups": ["memberOfGroupNames", "groups"], "roles": ["roles"], "scopes": ["scope"],
            "tenant": "env", "attributes": {"client_id": "client_id"}}


_PRESETS = {"keycloak": _keycloak, "entra-id": _entra, "okta": _okta, "auth0": _auth0, "ping": _ping}


def preset_claims(preset: Any) -> dict[str, Any]:
    """The ClaimMapping (as a dict) for a `preset` block: a dict from YAML or a ClaimPreset."""
    if not isinstance(preset, dict) and not hasattr(preset, "model_dump"):
        raise ValueError("preset: must be a mapping with a name")
    options = dict(preset) if isinstance(preset, dict) else preset.model_dump()
    name = options.pop("name", None)
    if name not in _PRESETS:
        raise ValueError(f"preset.name: unknown preset {name!r} (one of {', '.join(PRESET_NAMES)})")
    options.setdefault("client_id", None)
    options.setdefault("namespace", None)
    return _PRESETS[name](**options)
