"""Subjects whose credentials issued at or before an event are refused, and the guard that refuses them.

A revoking event (session-revoked, account-disabled, credential-compromise, ...) records its time
under each key of its subject. The guard wraps every authenticator: an identity whose keys meet a
recorded revocation, from a credential issued at or before it (`issued_at`, the token's `iat`), is
refused with 401 `subject_revoked`; a token issued after the event (the user signed in again) passes.
A credential with no issue time (an LDAP password, a client certificate, an API key, a Kerberos
ticket) is checked afresh at its source on every request and is not refused here.

Revocations live in this process's memory for `revocation_ttl_seconds`, bounded in number.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable, Iterable

from ..authn.identity import Identity
from ..context import RequestContext
from ..errors import InvalidCredential
from .subjects import Key, identity_keys

MAX_ENTRIES = 1_000_000


class Revocations:
    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl_seconds
        self._clock = clock
        self._at: OrderedDict[Key, float] = OrderedDict()  # key -> latest event time

    def revoke(self, keys: Iterable[Key], at: float) -> None:
        for key in keys:
            self._at[key] = max(at, self._at.get(key, 0.0))
            self._at.move_to_end(key)
        while len(self._at) > MAX_ENTRIES:
            self._at.popitem(last=False)

    def revoked_at(self, identity: Identity) -> float | None:
        """The latest revocation naming this identity, if it is still remembered."""
        horizon = self._clock() - self.ttl
        times = [t for key in identity_keys(identity) if (t := self._at.get(key)) is not None and t > horizon]
        return max(times) if times else None

    def refuses(self, identity: Identity) -> bool:
        if identity.anonymous or identity.issued_at is None:
            return False
        at = self.revoked_at(identity)
        return at is not None and identity.issued_at <= at


class RevocationGuard:
    """An authenticator that asks the one it wraps, then refuses revoked subjects."""

    def __init__(self, inner: Any, revocations: Revocations) -> None:
        self._inner = inner
        self._revocations = revocations

    def __getattr__(self, name: str) -> Any:  # name, challenge, login_url, ...: the wrapped one's
        return getattr(self._inner, name)

    async def authenticate(self, ctx: RequestContext) -> Identity | None:
        identity = await self._inner.authenticate(ctx)
        if identity is not None and self._revocations.refuses(identity):
            raise InvalidCredential("subject_revoked", message="The credential was revoked; sign in again.",
                                    detail=f"sub={identity.sub}: a security event revoked credentials issued "
                                           "before it")
        return identity
