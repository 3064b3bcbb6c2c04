"""The decision step: pick the route's engine, consult the cache, ask the engine, count the result.

    route id -> engine ("embedded" | "opa-lib" | "opa-wasm" | "opa") -> cache hit? -> engine -> strict parse

Failures propagate as `PolicyError` with their reason code (see engine.py); each is counted in
`iam_proxy_policy_decisions_total{engine, result}` before it leaves.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..core.decision import DecisionOutcome
from ..core.errors import PolicyError
from .cache import DecisionCache, uncacheable_reasons
from .engine import PolicyEngine, ask, interpret
from .input_reads import project

log = logging.getLogger("iam_proxy.policy")


def _cache_revision(engine: PolicyEngine) -> str:
    """What a cached decision was made under: the revision and the content's fingerprint, which
    changes when the content does even if a bundle keeps its revision string, and which every worker
    computes alike (a worker's swap count would not be)."""
    return f"{engine.revision}#{getattr(engine, 'fingerprint', '')}"


class Decider:
    def __init__(self, engines: dict[str, PolicyEngine], route_engines: dict[str, str],
                 cached_routes: frozenset[str], cache: DecisionCache | None, metrics: Any,
                 default: str | None = None) -> None:
        self.engines = engines
        self.default = default or next(iter(engines))  # the engine named by `policy.engine`
        self.route_engines = route_engines
        self.cached_routes = cached_routes if cache is not None else frozenset()
        self.cache = cache
        self.metrics = metrics
        self._cacheable: dict[tuple[str, str], bool] = {}  # (engine, revision) -> no volatile reads

    def engine_for(self, route_id: str) -> PolicyEngine:
        return self.engines[self.route_engines[route_id]]

    @property
    def default_revision(self) -> str:
        """The revision an event names when no route was matched: the default engine's."""
        return self.engines[self.default].revision

    def cacheable(self, engine: PolicyEngine) -> bool:
        """Only for an engine whose policies the proxy has analysed and found to read nothing volatile."""
        reads = getattr(engine, "policy_reads", None)
        if reads is None or self.cache is None:
            return False
        key = (engine.name, _cache_revision(engine))
        if key not in self._cacheable:
            reasons = uncacheable_reasons(reads, self.cache.volatile_headers)
            if reasons:
                log.warning("decision cache off for revision %s: the policies read volatile values (%s)",
                            engine.revision, "; ".join(reasons[:5]))
            self._cacheable = {key: not reasons}  # one revision at a time
        return self._cacheable[key]

    async def decide(self, route_id: str, path: str, policy_input: dict[str, Any]) -> DecisionOutcome:
        engine = self.engine_for(route_id)
        started = time.perf_counter()
        cache_key: bytes | None = None
        revision = ""
        read = policy_input  # what the engine is asked with
        try:
            hit = None
            if route_id in self.cached_routes and self.cache is not None and self.cacheable(engine):
                revision = _cache_revision(engine)
                # Keyed by what the policies can read: requests differing elsewhere share an entry.
                read = project(policy_input, engine.policy_reads.input)  # type: ignore[attr-defined]
                cache_key = self.cache.key(revision, path, read)
                hit = self.cache.get(revision, cache_key)
                self.metrics.child(self.metrics.decision_cache, "hit" if hit else "miss").inc()
            if hit is not None:
                outcome = interpret(hit, path, cached=True)
            else:
                result = await ask(engine, path, read)  # the projection, when one was made for the key
                outcome = interpret(result, path)
                if cache_key is not None and self.cache is not None:
                    self.cache.put(revision, cache_key, result)  # only well-formed decisions get here
            self.metrics.child(self.metrics.policy_decisions, engine.name,
                               "allowed" if outcome.decision.allowed else "denied").inc()
            return outcome
        except PolicyError as exc:
            self.metrics.child(self.metrics.policy_decisions, engine.name, exc.reason).inc()
            raise
        finally:
            self.metrics.child(self.metrics.policy_seconds, engine.name).observe(time.perf_counter() - started)
