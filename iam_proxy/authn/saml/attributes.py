"""What a verified SAML message yields: the Identity from its attributes, and the SP's results."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.claims import all_of, first_of
from ...core.identity import Identity
from ...settings.saml import SAMLAttributeMapping
from .xmlguard import refuse


@dataclass(frozen=True)
class LoginResult:
    identity: Identity
    name_id: str
    name_id_format: str | None
    session_index: str | None
    session_expires_at: float | None  # the IdP's SessionNotOnOrAfter


@dataclass(frozen=True)
class LogoutRequestResult:
    """An IdP-initiated LogoutRequest that verified; answer it by redirecting to `response_url`."""

    name_id: str
    session_indexes: tuple[str, ...]
    response_url: str


def map_identity(attributes: dict[str, list[str]], mapping: SAMLAttributeMapping, *, name_id: str, issuer: str,
                 provider: str, auth_time: int | None = None, acr: str | None = None,
                 expires_at: int | None = None) -> Identity:
    """Attributes (name or friendly name -> values) to an Identity, as the mapping says."""
    sub = first_of(attributes, mapping.sub) if mapping.sub else name_id
    if not sub:
        raise refuse("saml_subject_missing", message="The SAML assertion has no subject.")
    extra = {key: (values[0] if len(values) == 1 else values)
             for key, name in mapping.attributes.items() if (values := attributes.get(name))}
    return Identity(
        sub=sub,
        method="saml",
        iss=issuer,
        username=first_of(attributes, mapping.username) or name_id,
        email=first_of(attributes, mapping.email),
        name=first_of(attributes, mapping.name),
        groups=all_of(attributes, mapping.groups),
        roles=all_of(attributes, mapping.roles),
        tenant=first_of(attributes, mapping.tenant),
        auth_time=auth_time,
        acr=acr,
        amr=(),
        expires_at=expires_at,
        attributes={"saml_name_id": name_id, **extra},
        provider=provider,
    )
