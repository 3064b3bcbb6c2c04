"""Verify a Security Event Token (RFC 8417) from a configured transmitter.

The signature, `iss`, `aud` and the time claims go through `JWTAuthenticator.verify_claims`, the
project's one JOSE path, with a provider built from the transmitter (its JWKS, its issuer, our
audience, its algorithms; a SET carries no `exp`). On top of that, a SET must say it is one
(`typ: secevent+jwt`, so no other JWT can be replayed as a SET), and carry a `jti`, an `iat` and a
non-empty `events` object. Failures carry the RFC 8935 error code a push answers with.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from ..authn.bearer_jwt import JWTAuthenticator
from ..authn.jwks import JWKSCache
from ..errors import AuthUnavailable, InvalidCredential
from ..settings import JWTAuthenticatorSettings, JWTProvider
from .settings import TransmitterSettings

SET_TYPE = "secevent+jwt"

# InvalidCredential reasons of verify_claims -> RFC 8935 section 2.4 error codes
_ERR = {"issuer_unknown": "invalid_issuer", "issuer_mismatch": "invalid_issuer",
        "audience_mismatch": "invalid_audience", "bad_signature": "invalid_key", "key_unknown": "invalid_key",
        "algorithm_not_allowed": "invalid_key"}


class SetRejected(Exception):
    """The SET is refused; `err` is the RFC 8935 code, `reason` ours (for the audit event)."""

    def __init__(self, err: str, reason: str, description: str) -> None:
        super().__init__(description)
        self.err, self.reason, self.description = err, reason, description


@dataclass(frozen=True)
class SecurityEventToken:
    transmitter: str
    iss: str
    jti: str
    iat: float
    events: dict[str, dict[str, Any]]
    sub_id: Any  # the top-level subject identifier (SSF), if any
    txn: str | None = None


def _segment(token: str, index: int) -> dict[str, Any]:
    try:
        part = token.split(".")[index]
        value = orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        raise SetRejected("invalid_request", "set_malformed", "not a JWT") from None
    if not isinstance(value, dict):
        raise SetRejected("invalid_request", "set_malformed", "not a JWT")
    return value


class SetVerifier:
    """One per transmitter; `jwks_uri` as configured or as its ssf-configuration says."""

    def __init__(self, transmitter: TransmitterSettings, jwks_uri: str, session_factory) -> None:
        self.transmitter = transmitter
        provider = JWTProvider(id=f"ssf:{transmitter.id}", issuer=transmitter.issuer, jwks_uri=jwks_uri,
                               audiences=[transmitter.audience], algorithms=transmitter.algorithms,
                               leeway_seconds=min(transmitter.leeway_seconds, 300), require_exp=False,
                               jwks_min_refetch_seconds=1, http_timeout_seconds=transmitter.http_timeout_seconds)
        self.jwks = JWKSCache(provider, session_factory)
        self._jwt = JWTAuthenticator(provider.id, JWTAuthenticatorSettings(type="jwt", providers=[provider.id]),
                                     {provider.id: provider}, {provider.id: self.jwks})

    async def verify(self, token: str) -> SecurityEventToken:
        header = _segment(token, 0)
        if header.get("typ") != SET_TYPE and header.get("typ") != f"application/{SET_TYPE}":
            raise SetRejected("invalid_request", "set_type_missing", f"the JWT is not typed {SET_TYPE}")
        try:
            claims, _, _ = await self._jwt.verify_claims(token)
        except InvalidCredential as exc:
            raise SetRejected(_ERR.get(exc.reason, "invalid_request"), f"set_{exc.reason}",
                              exc.message or exc.reason) from None
        except AuthUnavailable:
            raise  # the transmitter's keys cannot be fetched now: not the SET's fault, try again later
        events = claims.get("events")
        if not isinstance(events, dict) or not events or not all(isinstance(v, dict) for v in events.values()):
            raise SetRejected("invalid_request", "set_events_missing", "the SET has no events object")
        jti, iat = claims.get("jti"), claims.get("iat")
        if not isinstance(jti, str) or not jti or not isinstance(iat, (int, float)) or isinstance(iat, bool):
            raise SetRejected("invalid_request", "set_claims_missing", "the SET needs jti and iat")
        txn = claims.get("txn")
        return SecurityEventToken(self.transmitter.id, claims["iss"], jti, float(iat), events,
                                  claims.get("sub_id"), txn if isinstance(txn, str) else None)


def unverified_issuer(token: str) -> str | None:
    """The `iss` a SET claims, only to choose its transmitter's verifier."""
    issuer = _segment(token, 1).get("iss")
    return issuer if isinstance(issuer, str) else None
