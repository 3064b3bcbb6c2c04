"""Where sessions live: in the sealed cookie itself, or in Redis behind a ticket.

Both stores answer the same five calls for the manager; neither sees a cookie or a secret key.
"""

from __future__ import annotations

import time
from typing import Protocol

import orjson

from ..core.errors import AuthUnavailable
from ..settings.sessions import RedisSessionStoreSettings
from ._model import Session


class SessionStore(Protocol):
    async def save(self, session: Session) -> bytes:
        """Store the session; returns what the cookie must carry (sealed by the manager)."""
        ...

    async def resolve(self, payload: bytes) -> Session | None:
        """The live session a cookie's payload names, or None (unknown, ended)."""
        ...

    async def end(self, session: Session) -> None: ...

    async def end_idp_session(self, provider: str, idp_session_id: str | None, sub: str | None) -> int:
        """End every session of an IdP session (or of a subject); returns how many were known."""
        ...

    async def consume_once(self, key: str, ttl: float) -> bool:
        """True the first time `key` is seen within `ttl` seconds, False after."""
        ...

    async def close(self) -> None: ...


class _ExpiringSet:
    """Keys remembered until their own expiry; pruned as it grows."""

    def __init__(self, clock) -> None:
        self._items: dict[object, float] = {}
        self._clock = clock

    def add(self, key: object, until: float) -> None:
        self._items[key] = max(until, self._items.get(key, 0.0))
        if len(self._items) > 1024 and len(self._items) % 256 == 0:
            now = self._clock()
            self._items = {k: v for k, v in self._items.items() if v > now}

    def get(self, key: object) -> float | None:
        until = self._items.get(key)
        return until if until is not None and until > self._clock() else None


class CookieStore:
    """The whole session is sealed into the cookie. Ended sessions are remembered in this process
    until they would have expired, so logout and back-channel logout hold for one replica; several
    replicas need the Redis store."""

    def __init__(self, lifetime_seconds: float, clock=time.time) -> None:
        self._clock = clock
        self._lifetime = lifetime_seconds
        self._ended = _ExpiringSet(clock)  # session id
        self._ended_idp = _ExpiringSet(clock)  # (provider, idp session id)
        self._ended_subjects: dict[tuple[str, str], float] = {}  # (provider, sub) -> ended at
        self._once = _ExpiringSet(clock)

    async def save(self, session: Session) -> bytes:
        return orjson.dumps(session.to_json())

    async def resolve(self, payload: bytes) -> Session | None:
        session = Session.from_json(orjson.loads(payload))
        if self._ended.get(session.id) is not None:
            return None
        if session.idp_session_id and self._ended_idp.get((session.provider, session.idp_session_id)):
            return None
        ended_at = self._ended_subjects.get((session.provider, session.identity.sub))
        if ended_at is not None and session.created_at <= ended_at:
            return None
        return session

    async def end(self, session: Session) -> None:
        self._ended.add(session.id, session.expires_at)

    async def end_idp_session(self, provider: str, idp_session_id: str | None, sub: str | None) -> int:
        now = self._clock()
        if idp_session_id:
            self._ended_idp.add((provider, idp_session_id), now + self._lifetime)
        elif sub:
            self._ended_subjects[(provider, sub)] = now
        return 0  # a cookie store cannot count sessions it does not hold

    async def consume_once(self, key: str, ttl: float) -> bool:
        if self._once.get(key) is not None:
            return False
        self._once.add(key, self._clock() + ttl)
        return True

    async def close(self) -> None:
        return None


class RedisStore:
    """Sessions in Redis (`<prefix>s:<id>`, expiring with the session); the cookie carries the id.
    Indexes by IdP session and by subject let back-channel logout find them."""

    def __init__(self, settings: RedisSessionStoreSettings, clock=time.time) -> None:
        import redis.asyncio as redis

        self._errors = (redis.RedisError, OSError)
        self._prefix = settings.key_prefix
        self._clock = clock
        self._redis = redis.Redis.from_url(
            settings.url, socket_timeout=settings.timeout_seconds,
            socket_connect_timeout=settings.timeout_seconds,
            password=settings.password.get_secret_value() if settings.password else None)

    def _unavailable(self, exc: Exception) -> AuthUnavailable:
        return AuthUnavailable("session_store_unavailable", detail=f"redis: {type(exc).__name__}")

    async def save(self, session: Session) -> bytes:
        ttl = max(1, int(session.expires_at - self._clock()))
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(f"{self._prefix}s:{session.id}", orjson.dumps(session.to_json()), ex=ttl)
            for index in self._indexes(session):
                pipe.sadd(index, session.id)
                pipe.expire(index, ttl, gt=True)
                pipe.expire(index, ttl, nx=True)
            await pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc) from None
        return orjson.dumps({"sid": session.id})

    def _indexes(self, session: Session) -> list[str]:
        out = [f"{self._prefix}sub:{session.provider}:{session.identity.sub}"]
        if session.idp_session_id:
            out.append(f"{self._prefix}idp:{session.provider}:{session.idp_session_id}")
        return out

    async def resolve(self, payload: bytes) -> Session | None:
        ticket = orjson.loads(payload)
        if not isinstance(ticket, dict) or not isinstance(ticket.get("sid"), str):
            return None
        try:
            raw = await self._redis.get(f"{self._prefix}s:{ticket['sid']}")
        except self._errors as exc:
            raise self._unavailable(exc) from None
        return Session.from_json(orjson.loads(raw)) if raw else None

    async def end(self, session: Session) -> None:
        try:
            await self._redis.delete(f"{self._prefix}s:{session.id}")
        except self._errors as exc:
            raise self._unavailable(exc) from None

    async def end_idp_session(self, provider: str, idp_session_id: str | None, sub: str | None) -> int:
        index = (f"{self._prefix}idp:{provider}:{idp_session_id}" if idp_session_id
                 else f"{self._prefix}sub:{provider}:{sub}")
        try:
            ids = await self._redis.smembers(index)
            keys = [f"{self._prefix}s:{i.decode()}" for i in ids]
            ended = await self._redis.delete(*keys) if keys else 0
            await self._redis.delete(index)
        except self._errors as exc:
            raise self._unavailable(exc) from None
        return int(ended)

    async def consume_once(self, key: str, ttl: float) -> bool:
        try:
            return bool(await self._redis.set(f"{self._prefix}once:{key}", b"1", nx=True, ex=max(1, int(ttl))))
        except self._errors as exc:
            raise self._unavailable(exc) from None

    async def close(self) -> None:
        await self._redis.aclose()
