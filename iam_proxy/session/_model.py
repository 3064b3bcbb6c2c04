"""The session record every interactive login produces, and its (de)serialization."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..core.identity import Identity

_TUPLE_FIELDS = {"groups", "roles", "scopes", "amr"}
_IDENTITY_FIELDS = {f.name for f in fields(Identity)}


@dataclass(frozen=True, slots=True)
class Session:
    id: str  # random, 256 bits, minted anew at every login
    identity: Identity
    provider: str  # the identity provider id the user signed in with
    protocol: str  # "oidc" or "saml"
    created_at: float
    expires_at: float  # absolute end; the user signs in again after it
    refreshed_at: float  # last time the identity was re-read from the IdP
    idp_session_id: str | None = None  # OIDC `sid` / SAML SessionIndex, for back-channel logout
    tokens: dict[str, str] = field(default_factory=dict)  # secrets: id_token, refresh_token, ...
    token_expires_at: float | None = None  # when the IdP's tokens run out (refresh before)
    data: dict[str, Any] = field(default_factory=dict)  # protocol extras (SAML NameID, ...)

    def with_changes(self, **changes: Any) -> "Session":
        return replace(self, **changes)

    def __repr__(self) -> str:  # never print tokens
        return f"Session(id=…{self.id[-6:]}, sub={self.identity.sub!r}, provider={self.provider!r})"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "identity": self.identity.to_dict(), "provider": self.provider,
                "protocol": self.protocol, "created_at": self.created_at, "expires_at": self.expires_at,
                "refreshed_at": self.refreshed_at, "idp_session_id": self.idp_session_id,
                "tokens": self.tokens, "token_expires_at": self.token_expires_at, "data": self.data}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Session":
        ident = {k: (tuple(v) if k in _TUPLE_FIELDS else v)
                 for k, v in raw["identity"].items() if k in _IDENTITY_FIELDS}
        return cls(id=raw["id"], identity=Identity(**ident), provider=raw["provider"],
                   protocol=raw["protocol"], created_at=raw["created_at"], expires_at=raw["expires_at"],
                   refreshed_at=raw["refreshed_at"], idp_session_id=raw.get("idp_session_id"),
                   tokens=dict(raw.get("tokens") or {}), token_expires_at=raw.get("token_expires_at"),
                   data=dict(raw.get("data") or {}))
