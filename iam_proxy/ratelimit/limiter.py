"""Rate limits: which apply to a request, checking them in the store, and the answer's headers
(draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` and `RateLimit`; `Retry-After` on 429)."""

from __future__ import annotations

import logging
import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter as MetricCounter, Gauge

from ..authn.identity import Identity
from ..errors import PolicyError, ProxyError
from ..policy.decision import Decision
from .config import LimitSettings, RateLimitSettings
from .gcra import Counter, StoreUnavailable, Verdict
from .keys import KeyMaker, storage_key

log = logging.getLogger("iam_proxy.ratelimit")

Headers = list[tuple[str, str]]


class Throttled(ProxyError):
    """429 rate_limited; 503 rate_limit_unavailable (store down, a limit fails closed) or
    load_shed (adaptive concurrency). Carries the headers the client gets with it."""

    status, reason, message = 429, "rate_limited", "Too many requests; retry later."

    def __init__(self, reason: str | None = None, *, status: int | None = None, message: str | None = None,
                 client_headers: Headers = (), detail: str | None = None) -> None:
        super().__init__(reason, status=status, message=message, detail=detail)
        self.client_headers = list(client_headers)


def policy_tier(decision: Decision | None, tiers: dict[str, Any]) -> str | None:
    """The tier an allowing decision names with `rate_limit: "<tier>"`; a wrong type or an unknown
    tier is a malformed decision (it denies)."""
    if decision is None or not decision.allowed or not isinstance(decision.raw, dict):
        return None
    tier = decision.raw.get("rate_limit")
    if tier is None:
        return None
    if not isinstance(tier, str) or tier not in tiers:
        raise PolicyError("policy_malformed", detail=f"decision.rate_limit: not a configured tier: {tier!r}")
    return tier


class RateLimiter:
    def __init__(self, settings: RateLimitSettings, store, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.store = store
        self.keys = KeyMaker(settings.client_attributes, settings.network)
        self._closed = {limit.id: (limit.on_store_error or settings.on_store_error) == "closed"
                        for limit in settings.limits}
        for limits in settings.tiers.values():
            self._closed.update({limit.id: limit.on_store_error != "open" for limit in limits})
        self.limited = MetricCounter("iam_proxy_rate_limited_total", "Requests refused by a rate limit",
                                     ["limit"], registry=registry)
        self.store_errors = MetricCounter("iam_proxy_rate_limit_store_errors_total",
                                          "Rate limit checks the store could not answer, by the mode applied",
                                          ["mode"], registry=registry)
        self.store_up = Gauge("iam_proxy_rate_limit_store_up", "1 while the rate limit store answers",
                              registry=registry)
        self.store_up.set_function(lambda: 1 if self.store.up else 0)

    @property
    def fails_closed(self) -> bool:
        return any(self._closed.values())

    def applicable(self, route_id: str, tier: str | None) -> list[LimitSettings]:
        limits = [limit for limit in self.settings.limits if not limit.routes or route_id in limit.routes]
        if tier is not None:
            chosen = [limit for limit in self.settings.tiers[tier] if not limit.routes or route_id in limit.routes]
            replaced = {limit.key for limit in chosen}
            limits = [limit for limit in limits if limit.key not in replaced] + chosen
        return limits

    async def check(self, identity: Identity, route_id: str, address: str, tier: str | None) -> Headers:
        """The client's RateLimit headers for an admitted request; raises Throttled otherwise."""
        limits = self.applicable(route_id, tier)
        if not limits:
            return []
        counters = [Counter(storage_key(limit.id, self.keys.value(limit.key, identity, route_id, address)),
                            limit.per_seconds * 1000 / limit.requests,
                            limit.per_seconds * 1000 / limit.requests * limit.capacity) for limit in limits]
        try:
            verdict = await self.store.check(counters)
        except StoreUnavailable as exc:
            closed = any(self._closed[limit.id] for limit in limits)
            self.store_errors.labels(mode="closed" if closed else "open").inc()
            log.warning("rate limit store unavailable (%s): failing %s", exc, "closed" if closed else "open")
            if closed:
                raise Throttled("rate_limit_unavailable", status=503, detail=str(exc),
                                message="Rate limits cannot be checked right now.",
                                client_headers=[("retry-after", "1")]) from None
            return []
        headers = _headers(limits, counters, verdict)
        if not verdict.allowed:
            refused = [limit.id for limit, wait in zip(limits, verdict.waits_ms) if wait > 0]
            for limit_id in refused:
                self.limited.labels(limit=limit_id).inc()
            retry = max(1, math.ceil(max(verdict.waits_ms) / 1000))
            raise Throttled(detail=f"limits {', '.join(refused)}", client_headers=[("retry-after", str(retry)),
                                                                                    *headers])
        return headers


def _headers(limits: list[LimitSettings], counters: list[Counter], verdict: Verdict) -> Headers:
    policy = ", ".join(f'"{limit.id}";q={limit.requests};w={limit.per_seconds}' for limit in limits)
    state = ", ".join(f'"{limit.id}";r={verdict.remaining(counter, i)};t={math.ceil(verdict.ahead_ms[i] / 1000)}'
                      for i, (limit, counter) in enumerate(zip(limits, counters)))
    return [("ratelimit-policy", policy), ("ratelimit", state)]
