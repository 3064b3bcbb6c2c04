"""The normalized identity every authenticator produces, and every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str
    method: str  # jwt, oidc, introspection, saml, ldap, x509, kerberos, apikey, anonymous
    iss: str | None = None
    username: str | None = None
    email: str | None = None
    name: str | None = None
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    tenant: str | None = None
    auth_time: int | None = None
    acr: str | None = None
    amr: tuple[str, ...] = ()
    expires_at: int | None = None
    issued_at: int | None = None  # the credential's `iat`, when it has one (signals/revocations.py)
    attributes: dict[str, Any] = field(default_factory=dict)
    cert: dict[str, Any] | None = None
    provider: str | None = None  # the configured identity provider id

    @property
    def anonymous(self) -> bool:
        return self.method == "anonymous"

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its recursive deep copy was 8% of the proxy's CPU under load
        # (docs/performance.md). The policy input built from this is only read, never mutated.
        data = {name: getattr(self, name) for name in FIELD_NAMES}
        for key in _TUPLE_FIELDS:
            data[key] = list(data[key])
        data["attributes"] = dict(self.attributes)
        if self.cert is not None:
            data["cert"] = dict(self.cert)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Identity:
        """The identity `to_dict` gave (a cache shared between workers carries identities as JSON)."""
        values = {name: data[name] for name in FIELD_NAMES if name in data}
        for key in _TUPLE_FIELDS:
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def summary(self) -> dict[str, Any]:
        """What an audit event carries about the identity."""
        return {
            "sub": self.sub,
            "method": self.method,
            "iss": self.iss,
            "provider": self.provider,
            "username": self.username,
            "email": self.email,
            "groups": list(self.groups),
            "roles": list(self.roles),
        }


FIELD_NAMES = tuple(f.name for f in fields(Identity))
_TUPLE_FIELDS = ("groups", "roles", "scopes", "amr")
