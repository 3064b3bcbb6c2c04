"""Adaptive concurrency toward the upstreams, shared fairly between clients.

One limit per route. The limit L (the route's requests in flight, this process) follows its upstream, in the spirit of Envoy's
adaptive concurrency filter, with a configured latency target instead of a measured minimum:
every `interval_seconds` (once `min_samples` requests have completed), with p90 the 90th
percentile latency of the window and e its share of 5xx answers,

    e > max_error_rate:        L <- max(min_limit, L * backoff)
    p90 > target:              L <- max(min_limit, L * max(0.5, target / p90))
    otherwise:                 L <- min(max_limit, L * min(2, target / p90) + sqrt(L))

Fair share: with n clients holding requests in flight (the asking one included), a request is
admitted while fewer than L are in flight, or while its client holds fewer than floor(L / n) and
fewer than 2L are in flight in all. A noisy client fills the free slots, but cannot keep a quiet
one below its share.
"""

from __future__ import annotations

import math
import time
from collections import Counter

from .config import AdaptiveSettings


class AdaptiveConcurrency:
    def __init__(self, settings: AdaptiveSettings, clock=time.monotonic) -> None:
        self.settings = settings
        self.limit = float(settings.initial_limit)
        self.inflight: Counter[str] = Counter()
        self.total = 0
        self._clock = clock
        self._window_start = clock()
        self._latencies: list[float] = []
        self._failures = 0

    def fair_share(self, client: str) -> int:
        active = len(self.inflight) + (client not in self.inflight)
        return max(1, math.floor(self.limit / active))

    def try_acquire(self, client: str) -> bool:
        if self.total >= self.limit and (self.inflight[client] >= self.fair_share(client)
                                         or self.total >= 2 * self.limit):
            return False
        self.inflight[client] += 1
        self.total += 1
        return True

    def release(self, client: str, seconds: float, failed: bool) -> None:
        self.inflight[client] -= 1
        if self.inflight[client] <= 0:
            del self.inflight[client]
        self.total -= 1
        self._latencies.append(seconds)
        self._failures += failed
        now = self._clock()
        if now - self._window_start >= self.settings.interval_seconds \
                and len(self._latencies) >= self.settings.min_samples:
            self._update()
            self._window_start = now

    def _update(self) -> None:
        s = self.settings
        samples = sorted(self._latencies)
        p90 = samples[min(len(samples) - 1, int(len(samples) * 0.9))]
        error_rate = self._failures / len(samples)
        self._latencies, self._failures = [], 0
        gradient = s.latency_target_ms / 1000 / max(p90, 1e-6)
        if error_rate > s.max_error_rate:
            self.limit = max(s.min_limit, self.limit * s.backoff)
        elif gradient < 1:
            self.limit = max(s.min_limit, self.limit * max(0.5, gradient))
        else:
            self.limit = min(s.max_limit, self.limit * min(2.0, gradient) + math.sqrt(self.limit))
