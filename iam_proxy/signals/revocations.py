"""Subjects whose credentials issued at or before an event are refused, and the guard that refuses them.

A revoking event (session-revoked, account-disabled, credential-compromise, ...) records its time
under each key of its subject. The guard wraps every authenticator: an identity whose keys meet a
recorded revocation, from a credential issued at or before it (`issued_at`, the token's `iat`), is
refused with 401 `subject_revoked`; a token issued after the event (the user signed in again) passes.
A token without `iat` cannot show it was issued after the event, so it is refused while the
revocation is remembered. A credential that has no issue time by nature (an LDAP password, a client
certificate, an API key, a Kerberos ticket) is checked afresh at its source on every request and is
not refused here.

Revocations are remembered for `revocation_ttl_seconds`, bounded in number: in this process's
memory, and with `signals.state_file` in a journal the workers of a host share and a restart reads.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson

from ..context import RequestContext
from ..core.errors import InvalidCredential
from ..core.identity import Identity
from .subjects import Key, identity_keys

log = logging.getLogger("iam_proxy.signals")

TOKEN_METHODS = frozenset({"jwt", "introspection", "oidc"})  # credentials that carry (or should carry) an `iat`

MAX_ENTRIES = 1_000_000
JOURNAL_CHECK_SECONDS = 0.05


class Revocations:
    """Key -> the latest revocation time. With a `journal` file, every revocation is appended to it
    and read back by every process sharing it (the workers of one host), and on restart."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.time, journal: Path | None = None) -> None:
        self.ttl = ttl_seconds
        self._clock = clock
        self._at: OrderedDict[Key, float] = OrderedDict()  # key -> latest event time
        self._journal = journal
        self._offset = 0  # how much of the journal is applied
        self._checked = 0.0
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            journal.touch(exist_ok=True)
            self._catch_up(force=True)

    def revoke(self, keys: Iterable[Key], at: float) -> None:
        keys = list(keys)
        self._apply(keys, at)
        if self._journal is not None:
            line = orjson.dumps({"keys": keys, "at": at}) + b"\n"
            fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line)  # one write of one line: workers appending at once never interleave
            finally:
                os.close(fd)

    def _apply(self, keys: Iterable[Key], at: float) -> None:
        for key in keys:
            self._at[key] = max(at, self._at.get(key, 0.0))
            self._at.move_to_end(key)
        while len(self._at) > MAX_ENTRIES:
            self._at.popitem(last=False)

    def _catch_up(self, force: bool = False) -> None:
        """Apply what other processes appended (looked at no more than every JOURNAL_CHECK_SECONDS)."""
        now = time.monotonic()
        if self._journal is None or not force and now - self._checked < JOURNAL_CHECK_SECONDS:
            return
        self._checked = now
        try:
            if os.stat(self._journal).st_size <= self._offset:
                return
            with open(self._journal, "rb") as stream:
                stream.seek(self._offset)
                chunk = stream.read()
        except OSError as exc:
            log.error("revocation journal %s cannot be read: %s", self._journal, exc)
            return
        complete = chunk[:chunk.rfind(b"\n") + 1]  # a line being written is read next time
        for line in complete.splitlines():
            try:
                entry = orjson.loads(line)
                self._apply([tuple(k) for k in entry["keys"]], float(entry["at"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.error("revocation journal %s: a malformed line is skipped", self._journal)
        self._offset += len(complete)

    def revoked_at(self, identity: Identity) -> float | None:
        """The latest revocation naming this identity, if it is still remembered."""
        self._catch_up()
        horizon = self._clock() - self.ttl
        times = [t for key in identity_keys(identity) if (t := self._at.get(key)) is not None and t > horizon]
        return max(times) if times else None

    def refuses(self, identity: Identity) -> bool:
        if identity.anonymous or (identity.issued_at is None and identity.method not in TOKEN_METHODS):
            return False
        at = self.revoked_at(identity)
        return at is not None and (identity.issued_at is None or identity.issued_at <= at)


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
