"""GCRA (the generic cell rate algorithm) over one or several counters, in memory or in Redis.

Each counter keeps one number, its theoretical arrival time (TAT). A limit of `requests` per
`per_seconds` with room for `capacity` at once has an emission interval T = per_seconds / requests
and a tolerance tau = T * capacity. A request is admitted when TAT' = max(TAT, now) + T is at most
now + tau; otherwise it must wait TAT' - tau - now. The counters of one request are checked and
advanced together: all admit it, or none is charged.

In Redis this is one Lua script, one round trip, atomic across replicas; the clock is Redis's own
(TIME), so replicas whose clocks disagree still share one schedule.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Counter:
    key: str
    interval_ms: float  # T
    tolerance_ms: float  # tau


@dataclass(frozen=True, slots=True)
class Verdict:
    """`waits_ms[i]` > 0: counter i refuses for that long; `ahead_ms[i]`: how far its TAT runs
    ahead of now after this request (the time until its full capacity is back)."""

    allowed: bool
    waits_ms: tuple[float, ...]
    ahead_ms: tuple[float, ...]

    def remaining(self, counter: Counter, i: int) -> int:
        return max(0, math.floor((counter.tolerance_ms - self.ahead_ms[i]) / counter.interval_ms))


class StoreUnavailable(Exception):
    """The shared store did not answer in time; the limit's `on_store_error` decides."""


# Times are float milliseconds, and their rounding must not refuse a request that is exactly on
# time: the first request of a burst of one waits (now + T) - T - now, which came out just above 0
# for about one clock reading in six. A wait up to ON_TIME_MS is no wait (the Redis script likewise).
ON_TIME_MS = 0.01


def advance(tat: float, now: float, counter: Counter) -> tuple[float, float]:
    """(wait, new TAT) for one request on one counter; wait > 0 refuses it."""
    new_tat = max(tat, now) + counter.interval_ms
    wait = new_tat - counter.tolerance_ms - now
    return (wait if wait > ON_TIME_MS else min(wait, 0.0)), new_tat


class MemoryStore:
    """Counters of this process only (no Redis configured); at most `max_keys`, the idle ones
    (TAT in the past, i.e. at full capacity) forgotten first."""

    def __init__(self, max_keys: int, clock=time.monotonic) -> None:
        self._tats: dict[str, float] = {}
        self._max_keys = max_keys
        self._clock = clock
        self.up = True

    async def check(self, counters: list[Counter]) -> Verdict:
        now = self._clock() * 1000
        steps = [advance(self._tats.get(c.key, now), now, c) for c in counters]
        allowed = all(wait <= 0 for wait, _ in steps)
        if allowed:
            for counter, (_, new_tat) in zip(counters, steps):
                self._tats[counter.key] = new_tat
            if len(self._tats) > self._max_keys:
                self._forget(now)
        ahead = tuple((new_tat if allowed else max(self._tats.get(c.key, now), now)) - now
                      for c, (_, new_tat) in zip(counters, steps))
        return Verdict(allowed, tuple(wait for wait, _ in steps), ahead)

    def _forget(self, now: float) -> None:
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        while len(self._tats) > self._max_keys:  # all busy: the oldest entries go
            del self._tats[next(iter(self._tats))]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
