"""The signed identity assertion (`X-Iam-Assertion`): a short-lived ES256 JWT for upstreams.

Upstreams verify it with the public keys served at `/.well-known/jwks.json`. Its `aud` is the route
id, so an assertion minted for one upstream is no use at another.

By default every request gets its own assertion, with `jti` = the request's decision id. With
`reuse_seconds`, an assertion is kept per (audience, claims) and handed again to the same identity's
requests for that long: the ECDSA signature is the largest single cost of a request whose token and
decision are cached (docs/performance.md), and a reused assertion still has at least half its life.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey

from ..core.cache import ExpiringCache
from ..core.identity import Identity

log = logging.getLogger("iam_proxy.assertion")

_ephemeral: ECKey | None = None

# Reused assertions kept per worker: about 1 KB each (the token and its key)
REUSE_ENTRIES = 10_000


def ephemeral_key() -> ECKey:
    """The key of a proxy without `assertion.key_file`: made once per service, so that reloads and
    every worker (workers.py makes it before forking) sign with the one key the JWKS publishes."""
    global _ephemeral
    if _ephemeral is None:
        log.warning("no assertion key_file configured: using an ephemeral key (restarts rotate it)")
        _ephemeral = ECKey.generate_key("P-256", private=True)
    return _ephemeral


class AssertionSigner:
    def __init__(self, key_file: Path | None, issuer: str, ttl_seconds: int, clock=time.time,
                 reuse_seconds: int = 0) -> None:
        self._key = ECKey.import_key(key_file.read_bytes()) if key_file is not None else ephemeral_key()
        public = self._key.as_dict(private=False)
        self.kid = hashlib.sha256(str(sorted(public.items())).encode()).hexdigest()[:16]
        self._public_jwk = {**public, "kid": self.kid, "use": "sig", "alg": "ES256"}
        self.issuer = issuer
        self.ttl = ttl_seconds
        self._clock = clock
        # One signature per request: the header segment is encoded once, and the claims are signed
        # with the key itself (jwt.encode's claim validation and re-encoding cost as much again, and
        # joserfc's ES256 builds its algorithm object per call).
        self._private_key = self._key.private_key
        self._ecdsa = ec.ECDSA(hashes.SHA256())
        self._header_segment = _b64(orjson.dumps({"alg": "ES256", "kid": self.kid, "typ": "JWT"}))
        self.reuse_seconds = reuse_seconds
        self._reused: ExpiringCache[tuple, str] = ExpiringCache(REUSE_ENTRIES if reuse_seconds else 0, clock)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._public_jwk]}

    def sign(self, identity: Identity, audience: str, jti: str) -> str:
        """The assertion for `identity` at `audience`; `jti` names it when a new one is signed."""
        if not self.reuse_seconds:
            return self._sign(identity, audience, jti)
        key = (audience, identity.sub, identity.method, identity.iss, identity.email, identity.username,
               identity.tenant, identity.groups, identity.roles)
        token = self._reused.get(key)
        if token is None:
            token = self._sign(identity, audience, jti)
            self._reused.put(key, token, self.reuse_seconds)
        return token

    def _sign(self, identity: Identity, audience: str, jti: str) -> str:
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "sub": identity.sub,
            "iat": now,
            "exp": now + self.ttl,
            "jti": jti,
            "auth_method": identity.method,
        }
        for name, value in (("idp", identity.iss), ("email", identity.email),
                            ("preferred_username", identity.username), ("tenant", identity.tenant)):
            if value:
                claims[name] = value
        if identity.groups:
            claims["groups"] = list(identity.groups)
        if identity.roles:
            claims["roles"] = list(identity.roles)
        signing_input = self._header_segment + b"." + _b64(orjson.dumps(claims))
        r, s = decode_dss_signature(self._private_key.sign(signing_input, self._ecdsa))
        return (signing_input + b"." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))).decode()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")
