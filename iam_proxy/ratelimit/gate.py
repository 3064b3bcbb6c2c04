"""The one place a request passes the rate limits and the adaptive concurrency limit:

    admission = await traffic.admit(identity, route_id, address, decision, forwarding=True)
    ...                                   # forward; admission.headers go to the client
    admission.release(status)             # always, with the status the client got

`admit` raises Throttled (429 rate_limited, 503 rate_limit_unavailable or load_shed)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter as MetricCounter
from prometheus_client.core import GaugeMetricFamily

from ..authn.identity import Identity
from ..policy.decision import Decision
from .adaptive import AdaptiveConcurrency
from .config import RateLimitSettings
from .gcra import MemoryStore
from .limiter import Headers, RateLimiter, Throttled, policy_tier


class Admission:
    __slots__ = ("headers", "_adaptive", "_client", "_started")

    def __init__(self, headers: Headers, adaptive: AdaptiveConcurrency | None = None, client: str = "") -> None:
        self.headers = headers
        self._adaptive = adaptive
        self._client = client
        self._started = time.monotonic()

    def release(self, status: int) -> None:
        if self._adaptive is not None:
            self._adaptive.release(self._client, time.monotonic() - self._started, status >= 500)
            self._adaptive = None


class Traffic:
    def __init__(self, settings: RateLimitSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        if settings.store == "redis":
            from .redis_store import RedisStore

            store: Any = RedisStore(settings.redis)  # type: ignore[arg-type]
        else:
            store = MemoryStore(settings.memory_max_keys)
        self.limiter = RateLimiter(settings, store, registry)
        # one adaptive limit per route: a slow upstream sheds its own traffic, not the others'
        self.adaptive: dict[str, AdaptiveConcurrency] = {}
        self.shed = MetricCounter("iam_proxy_load_shed_total", "Requests refused by the adaptive concurrency limit",
                                  ["route"], registry=registry)
        registry.register(_AdaptiveGauges(self.adaptive))

    async def admit(self, identity: Identity, route_id: str, address: str, decision: Decision | None,
                    forwarding: bool) -> Admission:
        tier = policy_tier(decision, self.settings.tiers)
        headers = await self.limiter.check(identity, route_id, address, tier)
        if not self.settings.adaptive.enabled or not forwarding:
            return Admission(headers)
        adaptive = self.adaptive.get(route_id)
        if adaptive is None:
            adaptive = self.adaptive[route_id] = AdaptiveConcurrency(self.settings.adaptive)
        client = self.limiter.keys.value(self.settings.adaptive.key, identity, route_id, address)
        if not adaptive.try_acquire(client):
            self.shed.labels(route=route_id).inc()
            raise Throttled("load_shed", status=503, message="The upstream is overloaded; retry later.",
                            client_headers=[("retry-after", "1")], detail=f"limit {adaptive.limit:.1f}")
        return Admission(headers, adaptive, client)

    def ready_checks(self) -> dict[str, bool]:
        """A Redis that is down fails readiness only when a limit fails closed (failing open, the
        replica still serves)."""
        if self.settings.store != "redis":
            return {}
        return {"rate_limits:redis": self.limiter.store.up or not self.limiter.fails_closed}

    def readiness(self) -> dict[str, Any]:
        """What /readyz adds: the shared store's state, whichever mode applies."""
        if self.settings.store != "redis":
            return {}
        return {"rate_limit_store": {"store": "redis", "up": self.limiter.store.up,
                                     "on_store_error": "closed" if self.limiter.fails_closed else "open"}}

    async def watch_store(self) -> None:
        interval = self.settings.redis.health_interval_seconds if self.settings.redis else 1.0
        while True:
            await self.limiter.store.ping()
            await asyncio.sleep(interval)

    def background(self) -> list:
        return [self.watch_store()] if self.settings.store == "redis" else []

    async def close(self) -> None:
        await self.limiter.store.close()


class _AdaptiveGauges:
    """The adaptive limit and requests in flight of each route, read when /metrics is scraped."""

    def __init__(self, limits: dict[str, AdaptiveConcurrency]) -> None:
        self._limits = limits

    def collect(self):
        limit = GaugeMetricFamily("iam_proxy_adaptive_concurrency_limit",
                                  "The adaptive concurrency limit toward a route's upstream", labels=["route"])
        inflight = GaugeMetricFamily("iam_proxy_adaptive_concurrency_inflight",
                                     "Requests in flight to a route's upstream", labels=["route"])
        for route, adaptive in list(self._limits.items()):
            limit.add_metric([route], adaptive.limit)
            inflight.add_metric([route], adaptive.total)
        return [limit, inflight]
