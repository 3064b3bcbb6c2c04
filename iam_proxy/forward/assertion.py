"""The signed identity assertion (`X-Iam-Assertion`): a short-lived ES256 JWT for upstreams.

Upstreams verify it with the public keys served at `/.well-known/jwks.json`. Its `aud` is the route
id, so an assertion minted for one upstream is no use at another.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from ..authn.identity import Identity

log = logging.getLogger("iam_proxy.assertion")


class AssertionSigner:
    def __init__(self, key_file: Path | None, issuer: str, ttl_seconds: int, clock=time.time) -> None:
        if key_file is not None:
            self._key = ECKey.import_key(key_file.read_bytes())
        else:
            log.warning("no assertion key_file configured: using an ephemeral key (restarts rotate it)")
            self._key = ECKey.generate_key("P-256", private=True)
        public = self._key.as_dict(private=False)
        self.kid = hashlib.sha256(str(sorted(public.items())).encode()).hexdigest()[:16]
        self._public_jwk = {**public, "kid": self.kid, "use": "sig", "alg": "ES256"}
        self.issuer = issuer
        self.ttl = ttl_seconds
        self._clock = clock

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._public_jwk]}

    def sign(self, identity: Identity, audience: str, jti: str) -> str:
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
        return jwt.encode({"alg": "ES256", "kid": self.kid, "typ": "JWT"}, claims, self._key)
