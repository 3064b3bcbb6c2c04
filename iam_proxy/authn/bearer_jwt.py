"""Bearer JWT authentication (RFC 6750 transport, RFC 7519 tokens, OIDC access and ID tokens).

This module is the project's only JOSE verification path (joserfc). For each token:
  1. peek at the unverified header and `iss` only to choose the configured provider;
  2. refuse any `alg` not pinned for that provider (no `none`, no HS256-with-a-public-key);
  3. verify the signature with the provider's JWKS (refetched once, rate-limited, on unknown kid);
  4. check `iss`, `aud`, `exp`, `nbf`, `iat` with the provider's leeway: finite numbers in range, and a
     lifetime no longer than the provider's max_token_lifetime_seconds (RFC 8725, docs/security.md);
  5. map the claims into an Identity as the provider's ClaimMapping says.
Verified identities are cached by token digest until the token expires, and a cached entry is only
used while its signing key is still in the provider's key set. With several workers the cache is
shared between them (core/shared_cache.py), so a token is verified once per service.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from typing import Any

import orjson
from joserfc import jws
from joserfc.errors import JoseError

from ..context import RequestContext
from ..core.cache import ExpiringCache
from ..core.errors import AuthUnavailable, InvalidCredential
from ..core.identity import FIELD_NAMES, Identity
from ..core.shared_cache import SharedTable, TieredCache
from ..settings.authn import JWTAuthenticatorSettings
from ..settings.identity import JWTProvider
from .audience import check_audience
from .base import authorization_credentials
from .jwks import JWKSCache, JWKSUnavailable
from .mapping import identity_from_claims

MAX_TOKEN_BYTES = 16 * 1024
TOKENS_TABLE = "verified-tokens"  # the workers' shared table of verified bearer tokens
# a 512-byte slot: an identity with a few groups, roles and scopes fits; a larger one is kept by its
# worker only
VERIFIED_TOKEN_BYTES = 444
# NumericDate bounds (RFC 7519 2): after 1970 and before the year 10000; anything else is a forgery
# or a bug, and a float beyond it (1e300) would make every comparison meaningless.
MAX_NUMERIC_DATE = 253402300799
UNTRUSTED_HEADER_PARAMETERS = frozenset({"crit", "zip", "jku", "jwk", "x5u"})


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """A time claim as a finite number in range, None when absent; anything else is refused."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= MAX_NUMERIC_DATE:
        raise InvalidCredential("token_claim_invalid", message=f"The token's {name} claim is not a valid time.")
    return float(value)


def _b64json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    value = orjson.loads(base64.urlsafe_b64decode(padded))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def bearer_token(ctx: RequestContext, header: str) -> str | None:
    """The token of an `Authorization: Bearer` header, None when the header is absent or not Bearer."""
    token = authorization_credentials(ctx, "bearer", header)
    if token is None:
        return None
    if not token:
        raise InvalidCredential("token_malformed", message="The bearer token is empty.")
    return token


def token_key(token: str) -> bytes:
    """A bearer token's cache key (its SHA-256); a token over MAX_TOKEN_BYTES is refused first."""
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidCredential("token_too_large", message="The bearer token is too large.")
    return hashlib.sha256(token.encode()).digest()


Verified = tuple[Identity, str, str | None]  # the identity, its provider id, the signing key's id


def _encode_verified(verified: Verified) -> bytes:
    """The identity's fields in order, without their names (a typical identity then fits a slot)."""
    identity, provider_id, kid = verified
    return orjson.dumps((list(identity.to_dict().values()), provider_id, kid))


def _decode_verified(encoded: bytes) -> Verified:
    values, provider_id, kid = orjson.loads(encoded)
    return Identity.from_dict(dict(zip(FIELD_NAMES, values))), provider_id, kid


class JWTAuthenticator:
    challenge = 'Bearer realm="iam-proxy"'

    def __init__(self, name: str, settings: JWTAuthenticatorSettings,
                 providers: dict[str, JWTProvider], jwks: dict[str, JWKSCache],
                 clock=time.time, shared: SharedTable | None = None) -> None:
        self.name = name
        self.settings = settings
        self._providers = {pid: providers[pid] for pid in settings.providers}
        self._by_issuer = {p.issuer: p for p in self._providers.values()}
        self._jwks = jwks
        self._clock = clock
        # token digest -> (identity, provider id, key id)
        self._cache: ExpiringCache[bytes, Verified] | TieredCache[Verified] = ExpiringCache(
            settings.cache_entries, clock=clock)
        if shared is not None:
            # what decided an identity: this authenticator's settings and its providers' (a reload
            # that changes them must not read identities the old ones verified)
            namespace = hashlib.sha256(repr((name, settings, sorted(self._providers.items()))).encode()).digest()
            self._cache = TieredCache(shared, settings.cache_entries, namespace, _encode_verified,
                                      _decode_verified, clock=clock)

    async def authenticate(self, ctx: RequestContext) -> Identity | None:
        token = bearer_token(ctx, self.settings.header)
        if token is None:
            return None
        identity = await self.verify(token)
        ctx.access_token = token  # forwarded only on routes with pass_access_token
        if self.settings.header != "authorization":
            ctx.consumed_headers.add(self.settings.header)
        return identity

    async def verify(self, token: str) -> Identity:
        digest = token_key(token)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None:
            identity, provider_id, kid = cached
            if kid is None or kid in self._jwks[provider_id].kids:
                return identity

        claims, provider, kid = await self.verify_claims(token, now)
        identity = identity_from_claims(claims, provider.claims, method="jwt", provider=provider.id)
        if not identity.sub:
            raise InvalidCredential("subject_missing", message="The token has no subject.")
        expires = float(claims["exp"]) + provider.leeway_seconds if "exp" in claims else now + 300
        self._cache.put_until(digest, (identity, provider.id, kid), expires)
        return identity

    async def verify_claims(self, token: str, now: float | None = None
                            ) -> tuple[dict[str, Any], JWTProvider, str | None]:
        """Verify signature, `iss`, `aud`, `exp`, `nbf`: the checked claims, their provider and the key id.
        Other token kinds (OIDC ID tokens, logout tokens) use this too, to keep one JOSE path."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidCredential("token_too_large", message="The token is too large.")
        now = self._clock() if now is None else now
        header, unverified = self._peek(token)
        provider = self._by_issuer.get(unverified.get("iss"))  # type: ignore[arg-type]
        if provider is None:
            raise InvalidCredential("issuer_unknown", message="The token's issuer is not accepted here.")
        self._check_header(header)
        alg = header.get("alg")
        if alg not in provider.algorithms:
            raise InvalidCredential("algorithm_not_allowed", message="The token's algorithm is not accepted.")
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None

        try:
            keys = await self._jwks[provider.id].get(kid)
        except JWKSUnavailable:
            raise AuthUnavailable("jwks_unavailable", detail=f"no keys for provider {provider.id}") from None
        if kid is not None and kid not in self._jwks[provider.id].kids:
            raise InvalidCredential("key_unknown", message="The token was signed with an unknown key.")
        try:
            compact = jws.deserialize_compact(token, keys, algorithms=provider.algorithms)
        except JoseError as exc:
            raise InvalidCredential("bad_signature", message="The token's signature is not valid.",
                                    detail=type(exc).__name__) from None
        try:
            claims = orjson.loads(compact.payload)
        except orjson.JSONDecodeError:
            raise InvalidCredential("token_malformed", message="The token is malformed.") from None
        if not isinstance(claims, dict):
            raise InvalidCredential("token_malformed", message="The token is malformed.")
        self._check_claims(claims, provider, now)
        return claims, provider, kid

    @staticmethod
    def _check_header(header: dict[str, Any]) -> None:
        """RFC 8725 3.6 and 3.10: no compression, no key or key URL taken from the token itself, and
        no critical extension (none is understood here)."""
        if UNTRUSTED_HEADER_PARAMETERS & header.keys():
            raise InvalidCredential("token_header_refused",
                                    message="The token asks for processing this service does not do.")

    @staticmethod
    def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidCredential("token_malformed", message="The bearer token is not a JWT.")
        try:
            return _b64json(parts[0]), _b64json(parts[1])
        except (ValueError, orjson.JSONDecodeError):
            raise InvalidCredential("token_malformed", message="The bearer token is not a JWT.") from None

    @staticmethod
    def _check_claims(claims: dict[str, Any], provider: JWTProvider, now: float) -> None:
        leeway = provider.leeway_seconds
        if claims.get("iss") != provider.issuer:
            raise InvalidCredential("issuer_mismatch", message="The token's issuer is not accepted here.")
        exp, nbf, iat = (_numeric_date(claims, name) for name in ("exp", "nbf", "iat"))
        if exp is None and provider.require_exp:
            raise InvalidCredential("token_malformed", message="The token has no expiry.")
        if exp is not None and now > exp + leeway:
            raise InvalidCredential("token_expired", message="The token has expired.")
        if nbf is not None and now + leeway < nbf:
            raise InvalidCredential("token_not_yet_valid", message="The token is not valid yet.")
        if iat is not None and iat > now + leeway:
            raise InvalidCredential("token_issued_in_future", message="The token was issued in the future.")
        if exp is not None:
            # the lifetime counts from the start the token claims, or from now when it claims none
            start = max(t for t in (iat, nbf) if t is not None) if iat is not None or nbf is not None else now
            if exp - min(start, now) > provider.max_token_lifetime_seconds:
                raise InvalidCredential("token_lifetime_too_long",
                                        message="The token's lifetime is longer than this issuer may grant.")
        check_audience(claims.get("aud"), provider.audiences)
