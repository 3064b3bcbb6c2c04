"""The one expiring cache: a bounded LRU whose entries die at their own time.

Verified tokens and certificates, introspection answers, LDAP logins and lookups and policy
decisions all keep their results here; each passes the expiry that fits it (a token's `exp`, a
configured TTL)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl_seconds: float) -> None:
        self.put_until(key, value, self._clock() + ttl_seconds)

    def put_until(self, key: K, value: V, expires: float) -> None:
        """Keep `value` until `expires` on this cache's clock."""
        if self.max_entries <= 0 or expires <= self._clock():
            return
        self._entries[key] = (value, expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def clear_local(self) -> None:
        """A cache of one process: the same as `clear` (TieredCache's clears only this worker's entries)."""
        self.clear()

    def __len__(self) -> int:
        return len(self._entries)
