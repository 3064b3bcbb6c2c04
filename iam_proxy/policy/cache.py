"""The decision cache: engine results keyed by (policy revision, decision path, input digest).

The digest leaves out what changes on every request without deciding anything: the request id, the
request time, and tracing headers (`volatile_headers`). Entries are bounded in number (least recently
used evicted first) and in age (TTL), and the whole cache is dropped the moment the engine reports a
new revision, so a policy or data change is never answered from the old revision.

With several workers the entries are shared between them (core/shared_cache.py): a caller's next
request is answered from the cache whichever worker takes it. The revision in a key is the engine's
revision and the fingerprint of the policy content it runs, which every worker computes alike.

A policy that reads the clock, randomness, the outside world, the whole input or a field the key
leaves out would be answered wrongly from a cache; `uncacheable_reasons` says so from what OPA's
parse of the policies shows they read (input_reads.py), and the decider does not cache them.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable

import orjson

from ..core import shared_cache
from ..core.cache import ExpiringCache
from ..core.shared_cache import TieredCache
from ..settings.policy import DecisionCacheSettings
from .engine import EngineResult
from .input_reads import WHOLE, PolicyReads, covers

# Input fields the cache key leaves out (besides the volatile headers): a policy reading them is not cached.
KEY_LEAVES_OUT = (("attributes", "request", "time"), ("attributes", "request", "http", "id"))
DECISIONS_TABLE = "decisions"  # the workers' shared table
# a 256-byte slot: an allow or a denial with its reasons fits; a larger decision (headers, a body) is
# kept by its worker only
DECISION_BYTES = 188


def uncacheable_reasons(reads: PolicyReads, volatile_headers: frozenset[str]) -> list[str]:
    """Why decisions of policies that read `reads` may not be cached (none: they may)."""
    reasons = list(reads.volatile)
    if reads.input is WHOLE:
        reasons.append(reads.unsure or "the policies read the whole input (a bare or dynamic `input`)")
        return reasons
    headers = ("attributes", "request", "http", "headers")
    for path in [*KEY_LEAVES_OUT, *((*headers, name) for name in sorted(volatile_headers))]:
        if covers(reads.input, list(path)):
            reasons.append(f"reads input.{'.'.join(path)}, which the cache key leaves out")
    return reasons


def _encode_result(result: EngineResult) -> bytes:
    return orjson.dumps((result.value, result.revision, result.engine))


def _decode_result(encoded: bytes) -> EngineResult:
    value, revision, engine = orjson.loads(encoded)
    return EngineResult(value, revision, engine)


class DecisionCache:
    def __init__(self, settings: DecisionCacheSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = settings.max_entries
        self.ttl = settings.ttl_seconds
        self.volatile_headers = frozenset(settings.volatile_headers)
        self._entries: ExpiringCache[bytes, EngineResult] | TieredCache[EngineResult] = ExpiringCache(
            settings.max_entries, clock)
        table = shared_cache.table(DECISIONS_TABLE)
        if table is not None:
            self._entries = TieredCache(table, settings.max_entries, b"decisions", _encode_result,
                                        _decode_result, clock)
        self._revision: str | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, revision: str, path: str, policy_input: dict[str, Any]) -> bytes:
        request = policy_input.get("attributes", {}).get("request", {})
        http = request.get("http", {})
        stable_http = {k: v for k, v in http.items() if k != "id"}
        stable_http["headers"] = {k: v for k, v in http.get("headers", {}).items()
                                  if k not in self.volatile_headers}
        stable = {**policy_input, "attributes": {
            **policy_input.get("attributes", {}),
            "request": {**{k: v for k, v in request.items() if k != "time"}, "http": stable_http}}}
        digest = hashlib.sha256(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)).digest()
        return f"{revision}\0{path}\0".encode() + digest

    def _check_revision(self, revision: str) -> None:
        if revision != self._revision:
            # Entries of the old revision can no longer be read (keys name the revision): this frees
            # them, and leaves a shared table's to workers that have not swapped yet.
            self._entries.clear_local()
            self._revision = revision

    def get(self, revision: str, key: bytes) -> EngineResult | None:
        self._check_revision(revision)
        return self._entries.get(key)

    def clear(self) -> int:
        """Drop every entry (a security event changed what some identity may do); how many there were."""
        count = len(self._entries)
        self._entries.clear()
        return count

    def put(self, revision: str, key: bytes, result: EngineResult) -> None:
        """`revision` is the one the key was made with; if the engine has moved on since, the
        entry is dropped with the rest at the next lookup."""
        self._check_revision(revision)
        self._entries.put(key, result, self.ttl)
