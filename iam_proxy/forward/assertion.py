"""The signed identity assertion (`X-Iam-Assertion`): a short-lived JWT for upstreams, ES256 by
default or an Ed25519 signature when `assertion.algorithm` is `Ed25519` (RFC 9864's name) or
`EdDSA` (RFC 8037's, for verifiers that do not know the new one yet).

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
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from ..core.cache import ExpiringCache
from ..core.errors import ConfigError
from ..core.identity import Identity
from ..core.loop_batch import TurnBatch

log = logging.getLogger("iam_proxy.assertion")

_ephemeral: dict[str, ECKey | OKPKey] = {}

# The JOSE names of an Ed25519 signature: the same key and the same bytes, only the header differs
ED25519 = frozenset({"Ed25519", "EdDSA"})

# Reused assertions kept per worker: about 1 KB each (the token and its key)
REUSE_ENTRIES = 10_000


def ephemeral_key(algorithm: str = "ES256") -> ECKey | OKPKey:
    """The key of a proxy without `assertion.key_file`: made once per service, so that reloads and
    every worker (workers.py makes it before forking) sign with the one key the JWKS publishes."""
    curve = _curve(algorithm)
    if curve not in _ephemeral:
        log.warning("no assertion key_file configured: using an ephemeral key (restarts rotate it)")
        _ephemeral[curve] = _key_type(curve).generate_key(curve, private=True)
    return _ephemeral[curve]


def _curve(algorithm: str) -> str:
    return "Ed25519" if algorithm in ED25519 else "P-256"


def _key_type(curve: str) -> type[ECKey] | type[OKPKey]:
    return OKPKey if curve == "Ed25519" else ECKey


def _load_key(key_file: Path, algorithm: str) -> ECKey | OKPKey:
    where = "identity_headers.assertion.key_file"
    try:
        pem = key_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: {key_file}: {exc.strerror}") from None
    curve = _curve(algorithm)
    wanted = f"{'an' if curve == 'Ed25519' else 'a'} {curve} key (algorithm {algorithm})"
    try:
        key = _key_type(curve).import_key(pem)
    except (JoseError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {key_file} is not {wanted}: {exc}") from None
    if key.as_dict(private=False).get("crv") != curve:
        raise ConfigError(f"{where}: {key_file} is not {wanted}")
    if not key.is_private:
        raise ConfigError(f"{where}: {key_file} holds a public key; the proxy signs with the private one")
    return key


class AssertionSigner:
    def __init__(self, key_file: Path | None, issuer: str, ttl_seconds: int, clock=time.time,
                 reuse_seconds: int = 0, algorithm: str = "ES256") -> None:
        self._key = _load_key(key_file, algorithm) if key_file is not None else ephemeral_key(algorithm)
        public = self._key.as_dict(private=False)
        self.kid = hashlib.sha256(str(sorted(public.items())).encode()).hexdigest()[:16]
        self._ed25519 = algorithm in ED25519
        self._public_jwk = {**public, "kid": self.kid, "use": "sig", "alg": algorithm}
        self.issuer = issuer
        self.ttl = ttl_seconds
        self._clock = clock
        # One signature per request: the header segment is encoded once, and the claims are signed
        # with the key itself (jwt.encode's claim validation and re-encoding cost as much again, and
        # joserfc's ES256 builds its algorithm object per call).
        self._private_key = self._key.private_key
        self._ecdsa = ec.ECDSA(hashes.SHA256())
        self._header_segment = _b64(orjson.dumps({"alg": algorithm, "kid": self.kid, "typ": "JWT"}))
        self.reuse_seconds = reuse_seconds
        self._reused: ExpiringCache[tuple, str] = ExpiringCache(REUSE_ENTRIES if reuse_seconds else 0, clock)
        # Like a decision, a signature reads memory the rest of a request does not (OpenSSL's P-256
        # tables): the signatures of one loop turn are made together (core/loop_batch.py).
        self._signed: TurnBatch[bytes, str] = TurnBatch(self._token)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._public_jwk]}

    async def sign(self, identity: Identity, audience: str, jti: str) -> str:
        """The assertion for `identity` at `audience`; `jti` names it when a new one is signed."""
        if not self.reuse_seconds:
            return await self._signed.run(self._signing_input(identity, audience, jti))
        key = (audience, identity.sub, identity.method, identity.iss, identity.email, identity.username,
               identity.tenant, identity.groups, identity.roles)
        token = self._reused.get(key)
        if token is None:
            signed = await self._signed.run(self._signing_input(identity, audience, jti))
            token = self._reused.get(key)  # a request of the same loop turn that signed first
            if token is None:
                token = signed
                self._reused.put(key, token, self.reuse_seconds)
        return token

    def _signing_input(self, identity: Identity, audience: str, jti: str) -> bytes:
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
        return self._header_segment + b"." + _b64(orjson.dumps(claims))

    def _token(self, signing_input: bytes) -> str:
        return (signing_input + b"." + _b64(self._signature(signing_input))).decode()

    def _signature(self, signing_input: bytes) -> bytes:
        if self._ed25519:
            return self._private_key.sign(signing_input)
        r, s = decode_dss_signature(self._private_key.sign(signing_input, self._ecdsa))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")
