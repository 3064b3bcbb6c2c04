"""Claim mapping as data: a provider's ClaimMapping says where each Identity field comes from."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidCredential
from ..settings import ClaimMapping
from .identity import Identity


def claim(claims: dict[str, Any], path: str) -> Any:
    """Read a dotted path (`realm_access.roles`); a claim whose own name has dots (a URL) matches whole."""
    node: Any = claims
    if path in claims:
        return claims[path]
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(" ") if v]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if isinstance(v, (str, int))]
    return []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _collect(claims: dict[str, Any], paths: list[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for path in paths:
        for value in _strings(claim(claims, path)):
            seen.setdefault(value, None)
    return tuple(seen)


def identity_from_claims(claims: dict[str, Any], mapping: ClaimMapping, *, method: str,
                         provider: str | None) -> Identity:
    for path in mapping.reject_if_present:
        if claim(claims, path) is not None:
            raise InvalidCredential("claims_incomplete", message="The token's claims are incomplete for this service.",
                                    detail=f"claim {path} present")
    sub = claim(claims, mapping.sub)
    amr = claims.get("amr")
    return Identity(
        sub=str(sub) if sub is not None else "",
        method=method,
        iss=_text(claims.get("iss")),
        username=_text(claim(claims, mapping.username)) if mapping.username else None,
        email=_text(claim(claims, mapping.email)) if mapping.email else None,
        name=_text(claim(claims, mapping.name)) if mapping.name else None,
        groups=_collect(claims, mapping.groups),
        roles=_collect(claims, mapping.roles),
        scopes=_collect(claims, mapping.scopes),
        tenant=_text(claim(claims, mapping.tenant)) if mapping.tenant else None,
        auth_time=claims.get("auth_time") if isinstance(claims.get("auth_time"), int) else None,
        acr=_text(claims.get("acr")),
        amr=tuple(_strings(amr)) if isinstance(amr, list) else (),
        expires_at=claims.get("exp") if isinstance(claims.get("exp"), int) else None,
        issued_at=int(claims["iat"]) if isinstance(claims.get("iat"), (int, float)) else None,
        attributes={name: claim(claims, path) for name, path in mapping.attributes.items()},
        provider=provider,
    )
