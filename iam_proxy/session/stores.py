"""Where sessions live: in the sealed cookie itself, or in Redis behind a ticket.

Both stores answer the same calls for the manager; neither sees a cookie or a secret key.
"""

from __future__ import annotations

import time
from typing import Protocol

import orjson

from ..errors import AuthUnavailable
from ..settings import RedisSessionStoreSettings
from ._model import Session


class SessionStore(Protocol):
    async def save(self, session: Session) -> bytes:
        """Store the session; returns what the cookie must carry (sealed by the manager)."""
        ...

    async def resolve(self, payload: bytes) -> Session | None:
        """The session a cookie's payload names, or None (unknown to the store)."""
        ...

    def session_id(self, payload: bytes) -> str | None:
        """The session id a cookie's payload names (to ask the revocation list about it)."""
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
    """The whole session is sealed into the cookie; which sessions ended is the manager's
    revocation list (revocations.py), shared by replicas and kept across restarts."""

    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        self._once = _ExpiringSet(clock)

    async def save(self, session: Session) -> bytes:
        return orjson.dumps(session.to_json())

    async def resolve(self, payload: bytes) -> Session | None:
        return Session.from_json(orjson.loads(payload))

    def session_id(self, payload: bytes) -> str | None:
        return Session.from_json(orjson.loads(payload)).id

    async def end(self, session: Session) -> None:
        return None  # the cookie cannot be taken back; the revocation list refuses it

    async def end_idp_session(self, provider: str, idp_session_id: str | None, sub: str | None) -> int:
        return 0  # nothing stored here: the revocation list ends them (and counts them)

    async def consume_once(self, key: str, ttl: float) -> bool:
        if self._once.get(key) is not None:
            return False
        self._once.add(key, self._clock() + ttl)
        return True

    async def close(self) -> None:
        return None


def redis_client(settings: RedisSessionStoreSettings):
    """A client with the configured timeouts, and the errors that mean "Redis is unavailable"."""
    import redis.asyncio as redis

    extra = {"password": settings.password.get_secret_value()} if settings.password else {}  # else the URL's
    client = redis.Redis.from_url(
        settings.url, socket_timeout=settings.timeout_seconds, socket_connect_timeout=settings.timeout_seconds,
        **extra)
    return client, (redis.RedisError, OSError)


class RedisStore:
    """Sessions in Redis (`<prefix>s:<id>`, expiring with the session); the cookie carries the id.
    Indexes by IdP session and by subject let back-channel logout find them."""

    def __init__(self, settings: RedisSessionStoreSettings, clock=time.time) -> None:
        self._redis, self._errors = redis_client(settings)
        self._prefix = settings.key_prefix
        self._clock = clock

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

    def session_id(self, payload: bytes) -> str | None:
        ticket = orjson.loads(payload)
        return ticket.get("sid") if isinstance(ticket, dict) and isinstance(ticket.get("sid"), str) else None

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
