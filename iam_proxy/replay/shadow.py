"""Shadow policies: per route, a candidate evaluated beside the live policy on real traffic.

The candidate never touches a request. The pipeline offers each decision after its response has
gone out (`offer`: a sample draw and a non-blocking put on a bounded queue; a full queue drops the
offer and counts it). One worker thread, with its own event loop, owns the candidate engines and
evaluates them; its verdicts come back to the proxy's loop, where they are counted

    iam_proxy_shadow_decisions_total{route, result}            agree | disagree | dropped | error
    iam_proxy_shadow_disagreements_total{route, rule, direction}   allow_to_deny | deny_to_allow

and every disagreement is written as an audit event of its own (`"kind": "shadow"`, the request's
decision_id), which `iam-proxy policy diff` summarises.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from prometheus_client import Counter

from ..audit.auditor import AuditRecordError
from ..audit.event import LABELS
from ..policy.embedded import EmbeddedEngine
from ..policy.engine import DecisionOutcome, PolicyEngine
from ..policy.opa_http import OpaHttpEngine
from ..redaction import mask_query_string, mask_uri
from ..settings import OpaServerSettings, Route
from .candidate import load_candidate
from .replay import UNANSWERED, Verdict, decide_verdict
from .shadow_settings import ShadowPolicySettings

log = logging.getLogger("iam_proxy.shadow")

RELOAD_CHECK_SECONDS = 1.0
OPA_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class _Offer:
    route: dict[str, Any]
    rule: str  # the live decision path
    shadow_path: str
    source: str
    policy_input: dict[str, Any]
    live: Verdict
    live_revision: str
    request: dict[str, Any]  # what the audit event says about the request (masked)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _source_key(shadow: ShadowPolicySettings) -> str:
    return f"dir:{shadow.dir}" if shadow.dir else f"bundle:{shadow.bundle}" if shadow.bundle else f"opa:{shadow.opa_url}"


def _build_engine(shadow: ShadowPolicySettings, paths: list[str]) -> PolicyEngine:
    if shadow.dir is not None:
        return EmbeddedEngine(shadow.dir, paths)
    if shadow.bundle is not None:
        return EmbeddedEngine(None, paths, source=load_candidate(shadow.bundle))
    return OpaHttpEngine(OpaServerSettings(url=shadow.opa_url or "", timeout_seconds=OPA_TIMEOUT_SECONDS))


class ShadowRunner:
    def __init__(self, routes: list[Route], registry: Any, auditor: Any,
                 draw: Callable[[], float] = random.random) -> None:
        self.plans = {r.id: r.policy.shadow for r in routes if r.policy.shadow is not None}
        self._live_path = {r.id: r.policy.path for r in routes}
        sources: dict[str, tuple[ShadowPolicySettings, set[str]]] = {}
        for route_id, shadow in self.plans.items():
            sources.setdefault(_source_key(shadow), (shadow, set()))[1].add(shadow.path or self._live_path[route_id])
        # compiled now, so a broken candidate is a startup error naming its file and line
        self.engines = {key: _build_engine(shadow, sorted(paths)) for key, (shadow, paths) in sources.items()}
        self.auditor = auditor
        self._draw = draw
        self._queue: queue.Queue[_Offer | None] = queue.Queue(max((s.queue_size for s in self.plans.values()), default=1))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.decisions = Counter("iam_proxy_shadow_decisions_total",
                                 "Shadow-policy decisions by route and result (agree, disagree, dropped, error)",
                                 ["route", "result"], registry=registry)
        self.disagreements = Counter("iam_proxy_shadow_disagreements_total",
                                     "Shadow-policy disagreements by route, rule (decision path) and direction",
                                     ["route", "rule", "direction"], registry=registry)

    @property
    def active(self) -> bool:
        return bool(self.plans)

    # ------------------------------------------------------------------ the request side

    def offer(self, ctx: Any, policy_input: dict[str, Any], outcome: DecisionOutcome | None, reason: str) -> None:
        """Called after the response went out; never blocks, never raises into the request."""
        shadow = self.plans.get(ctx.route.id) if ctx.route is not None else None
        if shadow is None or outcome is None and reason in UNANSWERED or self._draw() >= shadow.sample_rate:
            return  # (a live engine that did not answer decided nothing to compare with)
        live = (Verdict(outcome.decision.allowed, tuple(outcome.decision.reasons)) if outcome is not None
                else Verdict(False, (reason,)))
        identity = ctx.identity.summary() if ctx.identity is not None else None
        offer = _Offer(
            route={"id": ctx.route.id, "upstream": ctx.route.settings.upstream}, rule=self._live_path[ctx.route.id],
            shadow_path=shadow.path or self._live_path[ctx.route.id], source=_source_key(shadow),
            policy_input=policy_input, live=live, live_revision=outcome.revision if outcome is not None else "",
            request={"decision_id": ctx.decision_id, "request_id": ctx.request_id, "identity": identity,
                     "http": {"method": ctx.method, "host": ctx.host, "path": mask_uri(ctx.raw_path),
                              "query": mask_query_string(ctx.query_string)}})
        try:
            self._queue.put_nowait(offer)
        except queue.Full:
            self.decisions.labels(route=ctx.route.id, result="dropped").inc()

    # ------------------------------------------------------------------ the worker thread

    def start(self) -> None:
        if not self.active or self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="iam-proxy-shadow", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join, 10)
        self._thread = None

    def _work(self) -> None:
        loop = asyncio.new_event_loop()
        last_reload = time.monotonic()
        try:
            while (offer := self._queue.get()) is not None:
                engine = self.engines[offer.source]
                if time.monotonic() - last_reload > RELOAD_CHECK_SECONDS:
                    last_reload = time.monotonic()
                    for candidate in self.engines.values():
                        candidate.reload_if_changed()  # a broken edit keeps the last good candidate
                try:
                    verdict = loop.run_until_complete(decide_verdict(engine, offer.shadow_path, offer.policy_input))
                except Exception:  # noqa: BLE001 - the shadow must outlive anything one decision does
                    log.exception("shadow decision failed for %s", offer.request["decision_id"])
                    verdict = Verdict(False, ("policy_unavailable",))
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._record, offer, verdict, engine.revision, engine.name)
        finally:
            for engine in self.engines.values():
                loop.run_until_complete(engine.close())
            loop.close()

    # ------------------------------------------------------------------ back on the proxy's loop

    def _record(self, offer: _Offer, verdict: Verdict, revision: str, engine: str) -> None:
        route = offer.route["id"]
        if verdict.reasons and verdict.reasons[0] in UNANSWERED:  # the candidate's engine, not its policy
            self.decisions.labels(route=route, result="error").inc()
            return
        if verdict.allowed == offer.live.allowed:
            self.decisions.labels(route=route, result="agree").inc()
            return
        direction = "allow_to_deny" if offer.live.allowed else "deny_to_allow"
        self.decisions.labels(route=route, result="disagree").inc()
        self.disagreements.labels(route=route, rule=offer.rule, direction=direction).inc()
        event = {
            "kind": "shadow", **offer.request, "timestamp": _now(),
            "outcome": "shadow_disagreement", "reason": direction, "route": offer.route,
            "decision": {"path": offer.rule, "allowed": offer.live.allowed, "reasons": list(offer.live.reasons),
                         "revision": offer.live_revision},
            "shadow": {"path": offer.shadow_path, "allowed": verdict.allowed, "reasons": list(verdict.reasons),
                       "revision": revision, "engine": engine},
            "labels": LABELS,
        }
        try:
            self.auditor.record(event)
        except AuditRecordError as exc:
            log.error("shadow disagreement %s not recorded: %s", offer.request["decision_id"], exc)
