"""Consumed assertion IDs, remembered until the assertion expires, so a response is accepted once.

pysaml2 keeps no such cache. `MemoryReplayCache` serves one process; `RedisReplayCache` is shared by
every replica (one `SET NX EXAT` per assertion). Both fail closed: a full memory cache or an
unreachable Redis refuses the login rather than risking a replay.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ...core.errors import AuthUnavailable


class ReplayCache(Protocol):
    async def first_use(self, assertion_id: str, expires_at: float) -> bool:
        """True the first time `assertion_id` is seen (and remember it until `expires_at`)."""
        ...

    async def close(self) -> None: ...


class MemoryReplayCache:
    def __init__(self, max_entries: int = 100_000, clock=time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def _evict_expired(self, now: float) -> None:
        expired = [key for key, expires in self._seen.items() if expires <= now]
        for key in expired:
            del self._seen[key]

    async def first_use(self, assertion_id: str, expires_at: float) -> bool:
        now = self._clock()
        expires = self._seen.get(assertion_id)
        if expires is not None and expires > now:
            return False
        if len(self._seen) >= self.max_entries:
            self._evict_expired(now)
            if len(self._seen) >= self.max_entries:
                raise AuthUnavailable("saml_replay_cache_full", detail="assertion replay cache is full")
        self._seen[assertion_id] = expires_at
        return True

    async def close(self) -> None:
        self._seen.clear()


class RedisReplayCache:
    """Shares the sessions' Redis (`sessions.redis`); keys are `<key_prefix>saml:assertion:<idp>|<id>`."""

    def __init__(self, url: str, key_prefix: str = "iam-proxy:", timeout: float = 1.0,
                 password: str | None = None) -> None:
        self._redis = aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                        password=password)
        self._prefix = key_prefix + "saml:assertion:"

    async def first_use(self, assertion_id: str, expires_at: float) -> bool:
        try:
            stored = await self._redis.set(self._prefix + assertion_id, b"1", nx=True,
                                           exat=max(int(expires_at) + 1, int(time.time()) + 1))
        except (RedisError, OSError) as exc:
            raise AuthUnavailable("saml_replay_cache_unavailable",
                                  detail=f"redis replay cache: {type(exc).__name__}") from None
        return bool(stored)

    async def close(self) -> None:
        await self._redis.aclose()
