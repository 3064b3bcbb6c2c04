"""The list of ended sessions, shared by every process that reads the same cookies.

Logout and back-channel logout end a session; a copy of its cookie must then be refused by every
replica and after a restart, until the session would have expired anyway. Two backends answer the
same calls for the manager:

- `RedisRevocations` (when `sessions.redis` is configured): keys that expire with the sessions they
  name, shared by every replica that uses the same Redis;
- `FileRevocations` (otherwise): an append-only JSON-lines file (`sessions.revocation_file`), read
  back at start and whenever another process (a worker on this host) appended to it, and rewritten
  without the expired entries once they are the larger part.

Both also remember which sessions were issued for an IdP session and a subject, so that a
back-channel logout can say how many live sessions it ended, and a ticket store (`store: redis`)
can tell "ended" from "never existed".
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Protocol

import orjson

from ..errors import AuthUnavailable, ConfigError
from ..settings import RedisSessionStoreSettings
from ._model import Session
from .stores import redis_client

log = logging.getLogger("iam_proxy.session")


class Revocations(Protocol):
    async def issued(self, session: Session) -> None:
        """Remember a new session under its IdP session and subject (for counting at logout)."""
        ...

    async def end(self, session_id: str, until: float) -> None: ...

    async def end_idp_session(self, provider: str, idp_session_id: str | None, sub: str | None,
                              until: float) -> int:
        """End every session of an IdP session (or, without one, of a subject issued before now);
        returns how many live sessions that ended."""
        ...

    async def is_ended(self, session_id: str, session: Session | None) -> bool:
        """Ended by id; with the session itself, also by its IdP session or its subject."""
        ...

    async def close(self) -> None: ...


def _idp_key(provider: str, idp_session_id: str) -> str:
    return f"{provider}\x1f{idp_session_id}"


def _sub_key(provider: str, sub: str) -> str:
    return f"{provider}\x1f{sub}"


class _Lists:
    """The revocation state in memory: what a file replays into, and what is checked per request."""

    def __init__(self) -> None:
        self.ended: dict[str, float] = {}  # session id -> until
        self.ended_idp: dict[str, float] = {}  # provider+idp session -> until
        self.ended_sub: dict[str, tuple[float, float]] = {}  # provider+sub -> (ended at, until)
        self.issued: dict[str, dict[str, float]] = {}  # provider+idp session / "sub:"+provider+sub -> {id: until}

    def apply(self, entry: dict) -> None:
        kind, until = entry.get("k"), float(entry.get("u", 0))
        if kind == "s":
            self.ended[entry["id"]] = max(until, self.ended.get(entry["id"], 0.0))
        elif kind == "idp":
            self.ended_idp[entry["key"]] = max(until, self.ended_idp.get(entry["key"], 0.0))
        elif kind == "sub":
            at = float(entry["at"])
            previous = self.ended_sub.get(entry["key"], (0.0, 0.0))
            self.ended_sub[entry["key"]] = (max(at, previous[0]), max(until, previous[1]))
        elif kind == "issued":
            for key in entry["keys"]:
                self.issued.setdefault(key, {})[entry["id"]] = until

    def live_issued(self, key: str, now: float) -> list[str]:
        return [i for i, until in self.issued.get(key, {}).items() if until > now and i not in self.ended]

    def is_ended(self, session_id: str, session: Session | None, now: float) -> bool:
        if self.ended.get(session_id, 0.0) > now:
            return True
        if session is None:
            return False
        if session.idp_session_id and self.ended_idp.get(_idp_key(session.provider, session.idp_session_id),
                                                         0.0) > now:
            return True
        at, until = self.ended_sub.get(_sub_key(session.provider, session.identity.sub), (0.0, 0.0))
        return until > now and session.created_at <= at

    def live_entries(self, now: float) -> list[dict]:
        out: list[dict] = [{"k": "s", "id": i, "u": u} for i, u in self.ended.items() if u > now]
        out += [{"k": "idp", "key": k, "u": u} for k, u in self.ended_idp.items() if u > now]
        out += [{"k": "sub", "key": k, "at": at, "u": u} for k, (at, u) in self.ended_sub.items() if u > now]
        for key, ids in self.issued.items():
            out += [{"k": "issued", "id": i, "keys": [key], "u": u} for i, u in ids.items() if u > now]
        return out


def _issued_keys(session: Session) -> list[str]:
    keys = ["sub:" + _sub_key(session.provider, session.identity.sub)]
    if session.idp_session_id:
        keys.append(_idp_key(session.provider, session.idp_session_id))
    return keys


class FileRevocations:
    """Revocations in an append-only file shared by the processes of one host."""

    def __init__(self, path: Path, clock=time.time) -> None:
        self._path = Path(path)
        self._clock = clock
        self._lists = _Lists()
        self._offset = 0
        self._inode: int | None = None
        self._lines = 0
        self._lock_path = self._path.with_name(self._path.name + ".lock")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            self._catch_up()
        except OSError as exc:
            raise ConfigError(f"sessions.revocation_file: {self._path}: {exc.strerror}") from None

    # Every call takes the lock file: appends and the compaction's rename never interleave.
    def _locked(self):
        handle = open(self._lock_path, "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def _catch_up(self) -> None:
        """Read what other processes appended since we last looked (or all of a rewritten file)."""
        seen = os.stat(self._path)
        if seen.st_ino == self._inode and seen.st_size <= self._offset:
            return  # the common case: one stat per request
        with open(self._path, "rb") as handle:
            inode = os.fstat(handle.fileno()).st_ino  # of the file we read, not of a name that moved
            if inode != self._inode:
                self._lists, self._offset, self._lines, self._inode = _Lists(), 0, 0, inode
            handle.seek(self._offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written is read next time
        for line in complete.splitlines():
            try:
                self._lists.apply(orjson.loads(line))
            except (ValueError, KeyError, TypeError):
                log.warning("revocation file %s: skipped an unreadable line", self._path)
            self._lines += 1
        self._offset += len(complete)

    def _append(self, *entries: dict) -> None:
        data = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        try:
            with self._locked():
                self._catch_up()
                with open(self._path, "ab") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                self._catch_up()
                self._compact_if_mostly_expired()
        except OSError as exc:
            raise AuthUnavailable("session_store_unavailable",
                                  detail=f"revocation file {self._path}: {exc.strerror}") from None

    def _compact_if_mostly_expired(self) -> None:
        live = self._lists.live_entries(self._clock())
        if self._lines < 1024 or len(live) * 2 > self._lines:
            return
        temporary = self._path.with_name(self._path.name + ".tmp")
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(b"".join(orjson.dumps(e) + b"\n" for e in live))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._path)
        self._inode = None
        self._catch_up()

    async def issued(self, session: Session) -> None:
        self._append({"k": "issued", "id": session.id, "keys": _issued_keys(session), "u": session.expires_at})

    async def end(self, session_id: str, until: float) -> None:
        self._append({"k": "s", "id": session_id, "u": until})

    async def end_idp_session(self, provider: str, idp_session_id: str | None, sub: str | None,
                              until: float) -> int:
        now = self._clock()
        self._read()
        if idp_session_id:
            key = _idp_key(provider, idp_session_id)
            live = self._lists.live_issued(key, now)
            marker = {"k": "idp", "key": key, "u": until}
        else:
            live = self._lists.live_issued("sub:" + _sub_key(provider, str(sub)), now)
            marker = {"k": "sub", "key": _sub_key(provider, str(sub)), "at": now, "u": until}
        self._append(marker, *({"k": "s", "id": i, "u": until} for i in live))
        return len(live)

    async def is_ended(self, session_id: str, session: Session | None) -> bool:
        self._read()
        return self._lists.is_ended(session_id, session, self._clock())

    def _read(self) -> None:
        try:
            self._catch_up()
        except OSError as exc:  # the list cannot be read: no session counts (fail closed)
            raise AuthUnavailable("session_store_unavailable",
                                  detail=f"revocation file {self._path}: {exc.strerror}") from None

    async def close(self) -> None:
        return None


class RedisRevocations:
    """Revocations as Redis keys under `<prefix>rev:`, each expiring with what it names."""

    def __init__(self, settings: RedisSessionStoreSettings, clock=time.time) -> None:
        self._redis, self._errors = redis_client(settings)
        self._prefix = settings.key_prefix + "rev:"
        self._clock = clock

    def _ttl(self, until: float) -> int:
        return max(1, int(until - self._clock()) + 1)

    async def _run(self, operation):
        try:
            return await operation
        except self._errors as exc:
            raise AuthUnavailable("session_store_unavailable", detail=f"redis: {type(exc).__name__}") from None

    async def issued(self, session: Session) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for key in _issued_keys(session):
            name = f"{self._prefix}issued:{key}"
            pipe.zadd(name, {session.id: session.expires_at})
            pipe.expire(name, self._ttl(session.expires_at), gt=True)
            pipe.expire(name, self._ttl(session.expires_at), nx=True)
        await self._run(pipe.execute())

    async def end(self, session_id: str, until: float) -> None:
        await self._run(self._redis.set(f"{self._prefix}s:{session_id}", b"1", ex=self._ttl(until)))

    async def end_idp_session(self, provider: str, idp_session_id: str | None, sub: str | None,
                              until: float) -> int:
        now = self._clock()
        if idp_session_id:
            key = _idp_key(provider, idp_session_id)
            marker, value = f"{self._prefix}idp:{key}", b"1"
        else:
            key = "sub:" + _sub_key(provider, str(sub))
            marker, value = f"{self._prefix}sub:{_sub_key(provider, str(sub))}", repr(now).encode()
        ids = await self._run(self._redis.zrangebyscore(f"{self._prefix}issued:{key}", now, "+inf"))
        live = [i.decode() for i in ids]
        already = await self._run(self._redis.mget([f"{self._prefix}s:{i}" for i in live])) if live else []
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(marker, value, ex=self._ttl(until))
        for session_id in live:
            pipe.set(f"{self._prefix}s:{session_id}", b"1", ex=self._ttl(until))
        await self._run(pipe.execute())
        return sum(1 for flag in already if flag is None)

    async def is_ended(self, session_id: str, session: Session | None) -> bool:
        names = [f"{self._prefix}s:{session_id}"]
        if session is not None:
            names.append(f"{self._prefix}sub:{_sub_key(session.provider, session.identity.sub)}")
            if session.idp_session_id:
                names.append(f"{self._prefix}idp:{_idp_key(session.provider, session.idp_session_id)}")
        values = await self._run(self._redis.mget(names))
        if values[0] is not None or (len(values) > 2 and values[2] is not None):
            return True
        return session is not None and values[1] is not None and session.created_at <= float(values[1])

    async def close(self) -> None:
        await self._redis.aclose()
