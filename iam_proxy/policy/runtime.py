"""Everything the policy stage needs at run time, built once from validated settings:

- one engine per kind the routes use: `embedded`, `opa-lib` or `opa-wasm` (policy dir, or a bundle file/URL)
  and/or `opa`;
- the Decider (route -> engine, decision cache, metrics);
- the OPA-compatible decision-log writer, when configured;
- the background work: policy-dir reloads, bundle polling, OPA health checks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine

from ..settings import Settings
from .bundle import BundleSource, poll_once
from .cache import DecisionCache
from .decider import Decider
from .decision_log import DecisionLogWriter
from .embedded import EmbeddedEngine
from .engine import PolicyEngine
from .opa_http import OpaHttpEngine
from .opa_lib import OpaLibEngine

log = logging.getLogger("iam_proxy.policy")


def _in_process_engine(kind: str) -> type[EmbeddedEngine]:
    """opa-wasm's module, and wasmtime with it, is imported only when a route decides with it."""
    if kind == "opa-wasm":
        from .opa_wasm import OpaWasmEngine
        return OpaWasmEngine
    return {"embedded": EmbeddedEngine, "opa-lib": OpaLibEngine}[kind]


class PolicyRuntime:
    def __init__(self, settings: Settings, metrics: Any) -> None:
        self.settings = settings
        self.metrics = metrics
        policy = settings.policy
        route_engines = {route.id: settings.engine_for(route) for route in settings.routes}
        self.engines: dict[str, PolicyEngine] = {}
        self.bundles: dict[str, BundleSource] = {}  # engine kind -> its own bundle source (own ETag)
        for kind in ("embedded", "opa-lib", "opa-wasm"):
            if kind not in route_engines.values():
                continue
            engine_class = _in_process_engine(kind)
            entrypoints = [r.policy.path for r in settings.routes if route_engines[r.id] == kind]
            if policy.bundle is not None:
                self.bundles[kind] = BundleSource(policy.bundle)
                self.engines[kind] = engine_class(None, entrypoints, metrics, source=self.bundles[kind].load_initial())
            else:
                self.engines[kind] = engine_class(policy.dir, entrypoints, metrics)
        if "opa" in route_engines.values() and policy.opa is not None:
            self.engines["opa"] = OpaHttpEngine(policy.opa)
        if policy.engine == "auto":
            log.info("policy.engine auto: %s", "opa-lib (OPA's evaluator; its library is built)"
                     if policy.default_engine == "opa-lib" else
                     "embedded (rego-cpp; OPA's library is not built: scripts/install-peers.sh opa-lib)")
        self.default_engine = self.engines.get(policy.default_engine) or next(iter(self.engines.values()))
        cached_routes = frozenset(r.id for r in settings.routes if settings.caches_decisions(r))
        cache = DecisionCache(policy.cache) if cached_routes else None
        self.decider = Decider(self.engines, route_engines, cached_routes, cache, metrics,
                               default=self.default_engine.name)
        self.decision_log = DecisionLogWriter(policy.decision_log.path) if policy.decision_log else None

    def background(self) -> list[Coroutine[Any, Any, None]]:
        jobs: list[Coroutine[Any, Any, None]] = []
        interval = self.settings.policy.reload_interval_seconds
        for kind, embedded in self.engines.items():
            if not isinstance(embedded, EmbeddedEngine):  # OpaLibEngine and OpaWasmEngine are too
                continue
            bundle = self.bundles.get(kind)
            if bundle is not None:
                bundle_interval = interval if bundle.settings.file is not None else bundle.poll_interval
                if bundle_interval > 0:
                    jobs.append(self._poll_bundle(bundle, embedded, bundle_interval))
            elif interval > 0:
                jobs.append(self._watch_dir(embedded, interval))
        opa = self.engines.get("opa")
        if isinstance(opa, OpaHttpEngine):
            jobs.append(opa.run_health_checks())
        return jobs

    async def _watch_dir(self, engine: EmbeddedEngine, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                # off the event loop: the load-time check forks a child and waits for it (bounded.py)
                await asyncio.to_thread(engine.reload_if_changed)
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad reload
                log.exception("policy watcher error")

    async def _poll_bundle(self, source: BundleSource, engine: EmbeddedEngine, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await poll_once(source, engine, self.metrics)
            except Exception:  # noqa: BLE001
                log.exception("bundle poller error")

    def ready_checks(self) -> dict[str, bool]:
        return {f"policy:{kind}": engine.ready for kind, engine in self.engines.items()}

    def revision_for(self, route_id: str) -> str:
        return self.decider.engine_for(route_id).revision

    async def close(self) -> None:
        for engine in self.engines.values():
            await engine.close()
        if self.decision_log is not None:
            self.decision_log.close()
