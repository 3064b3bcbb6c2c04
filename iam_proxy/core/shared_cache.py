"""Caches the worker processes share: a fixed table in memory mapped before the fork.

With `listeners.workers` > 1 the kernel spreads connections over the workers, so one caller's
requests land on any of them, and a cache of each worker's own verifies a token and evaluates a
decision once per worker instead of once per service. `SharedTable` holds fixed-size slots in an
anonymous shared mapping that `prepare` makes in the supervisor before it forks; `TieredCache`
puts a worker's own `ExpiringCache` in front of it and has the same interface, so a cache that
shares is the same object to its user as one that does not.

No locks: a writer blanks a slot's check, writes the entry, then writes the check (a BLAKE2b digest
of the entry). A reader copies the slot and accepts it only when the check matches what it copied,
so an entry torn by a writer in another process reads as a miss, never as someone else's value.
`clear` draws a new random epoch; an entry, shared or local, counts only under the epoch it was
written in, so one worker's clear (a security event) clears every worker's copies.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import struct
import time
from typing import Callable, Generic, TypeVar

from .cache import ExpiringCache

V = TypeVar("V")

WAYS = 8  # slots a key may occupy: a full bucket evicts the entry closest to its expiry
LOAD = 1.5  # slots per entry asked for: full, about 3 % of the entries are lost to full buckets
_HEAD = struct.Struct("<16sQd32sI")  # check, epoch, expires, key, value length
_EPOCH = struct.Struct("<Q")
_HEADER_BYTES = 64
_BLANK = bytes(16)


def _check(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


class SharedTable:
    """Byte values of up to `value_bytes` under 32-byte keys, in slots shared with every process forked
    after it was made. Pages are only backed once written: memory grows with the entries, up to
    `entries` x LOAD x the slot size."""

    def __init__(self, entries: int, value_bytes: int) -> None:
        self.value_bytes = value_bytes
        self.slot_bytes = _HEAD.size + value_bytes
        self.buckets = max(1, math.ceil(entries * LOAD / WAYS))
        self._memory = mmap.mmap(-1, _HEADER_BYTES + self.buckets * WAYS * self.slot_bytes, flags=mmap.MAP_SHARED)
        self.clear()

    @property
    def epoch(self) -> int:
        epoch: int = _EPOCH.unpack_from(self._memory, 0)[0]
        return epoch

    def clear(self) -> None:
        """Every entry written so far stops counting, in every process (a random epoch: two processes
        clearing at once cannot land on an epoch some entry already carries)."""
        self._memory[0:_EPOCH.size] = os.urandom(_EPOCH.size)

    def _slots(self, key: bytes) -> range:
        first = _HEADER_BYTES + (int.from_bytes(key[:8], "little") % self.buckets) * WAYS * self.slot_bytes
        return range(first, first + WAYS * self.slot_bytes, self.slot_bytes)

    def get(self, key: bytes, now: float) -> tuple[bytes, float] | None:
        """The value under `key` and when it expires."""
        memory = self._memory
        epoch = self.epoch
        for offset in self._slots(key):
            if memory[offset + 32:offset + 64] != key:
                continue
            length = min(int.from_bytes(memory[offset + 64:offset + 68], "little"), self.value_bytes)
            record = memory[offset:offset + _HEAD.size + length]
            check, entry_epoch, expires, entry_key, _ = _HEAD.unpack_from(record)
            if (check == _check(record[16:]) and entry_key == key and entry_epoch == epoch
                    and now < expires):
                return record[_HEAD.size:], expires
        return None

    def put(self, key: bytes, value: bytes, expires: float, now: float) -> None:
        """Nothing is written when `value` does not fit a slot (the caller keeps it to itself)."""
        if len(value) > self.value_bytes:
            return
        memory = self._memory
        epoch = self.epoch
        heads = [(offset, _HEAD.unpack_from(memory, offset)) for offset in self._slots(key)]
        # the key's own slot, else a free one (empty, cleared, expired), else the one that ends first
        target = (next((offset for offset, head in heads if head[3] == key), None)
                  or next((offset for offset, head in heads if head[1] != epoch or head[2] <= now), None)
                  or min(heads, key=lambda item: item[1][2])[0])
        body = _HEAD.pack(_BLANK, epoch, expires, key, len(value))[16:] + value
        memory[target:target + 16] = _BLANK
        memory[target + 16:target + _HEAD.size + len(value)] = body
        memory[target:target + 16] = _check(body)


class TieredCache(Generic[V]):
    """`ExpiringCache`'s interface over a `SharedTable`, with the worker's own entries in front.

    The worker keeps, up to `max_entries`, the values it wrote or read from the table, so a repeated
    hit needs no copy and no decoding (bounding these to the last thousand cost the token mix 15 %
    of its throughput: docs/performance.md, round six), and the values the table cannot hold.
    `encode` turns a value into JSON bytes for the table (a value JSON cannot carry, its TypeError,
    stays in the worker's own entries); `decode` undoes it.
    `namespace` (at most 64 bytes, a digest) names what decided the values, such as a configuration's
    fingerprint: a table outlives reloads, and a key is only read back under the namespace it was
    written with. Every entry of the worker's own carries the table's epoch, so another worker's
    clear drops them too."""

    def __init__(self, table: SharedTable, max_entries: int, namespace: bytes,
                 encode: Callable[[V], bytes], decode: Callable[[bytes], V],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.table = table
        self.max_entries = max_entries
        self._own: ExpiringCache[bytes, tuple[int, V]] = ExpiringCache(max_entries, clock)
        self._namespace = namespace
        self._encode = encode
        self._decode = decode
        self._clock = clock

    def _key(self, key: bytes) -> bytes:
        return hashlib.blake2b(key, digest_size=32, key=self._namespace).digest()

    def get(self, key: bytes) -> V | None:
        epoch = self.table.epoch
        entry = self._own.get(key)
        if entry is not None:
            if entry[0] == epoch:
                return entry[1]
            self._own.discard(key)
        now = self._clock()
        shared = self.table.get(self._key(key), now)
        if shared is None:
            return None
        encoded, expires = shared
        value = self._decode(encoded)
        self._own.put_until(key, (epoch, value), expires)
        return value

    def put(self, key: bytes, value: V, ttl_seconds: float) -> None:
        self.put_until(key, value, self._clock() + ttl_seconds)

    def put_until(self, key: bytes, value: V, expires: float) -> None:
        if self.max_entries <= 0:
            return
        self._own.put_until(key, (self.table.epoch, value), expires)
        try:
            encoded = self._encode(value)
        except TypeError:  # orjson.JSONEncodeError is one
            return
        self.table.put(self._key(key), encoded, expires, self._clock())

    def clear(self) -> None:
        """Every entry, in every worker."""
        self.clear_local()
        self.table.clear()

    def clear_local(self) -> None:
        """This worker's own entries only."""
        self._own.clear()

    def __len__(self) -> int:
        return len(self._own)


_tables: dict[str, SharedTable] = {}


def prepare(name: str, entries: int, value_bytes: int) -> SharedTable:
    """The table `name`, made once per service: called before the fork, every worker inherits it."""
    if name not in _tables:
        _tables[name] = SharedTable(entries, value_bytes)
    return _tables[name]


def table(name: str) -> SharedTable | None:
    """The table the supervisor prepared (None in a single process: its own cache is the whole cache)."""
    return _tables.get(name)
