"""The front doors that answer with the pipeline's outcome: the HTTP proxy and forward-auth.

    scope -> RequestDescription -> Pipeline.decide -> Outcome -> answer (forward and stream, or a
    forward-auth answer, or the refusal) -> the audit event, completed once, before the last byte

Both answer through `respond` (as does the ext_authz adapter), the one place where an outcome becomes a response and its audit event
is completed: the response goes out through an `AuditedResponse` (audit/writeahead.py), which records
the event from the outcome's audit draft just before the last byte; the `finally` records a response
that never completed. A failure while answering (the upstream down or slow, the client gone) updates
the draft first.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

from .audit.auditor import Auditor
from .audit.writeahead import AuditedResponse
from .context import RequestContext, RequestDescription
from .core.asgi import Receive, Scope, Send
from .core.decision import Decision
from .core.errors import ProxyError, RouteNotFound
from .core.identity import Identity
from .core.responses import send_error
from .forward.headers import HeaderRewriter
from .forward.upstream import ClientDisconnected, UpstreamClient, UpstreamResponseFailed
from .forward_auth import ForwardAuth, refusal_headers
from .ops.metrics import Metrics
from .pipeline import Admit, Outcome, Pipeline
from .policy.decision_log import DecisionLogWriter
from .ratelimit import Admission, Traffic
from .replay.shadow import ShadowRunner

log = logging.getLogger("iam_proxy.pipeline")

Answer = Callable[[Send], Awaitable[int]]  # sends the allowed response, returns its status


class FrontDoors:
    def __init__(self, *, pipeline: Pipeline, upstream: UpstreamClient, rewriter: HeaderRewriter,
                 auditor: Auditor, metrics: Metrics, forward_auth: ForwardAuth,
                 decision_log: DecisionLogWriter | None = None, traffic: Traffic | None = None) -> None:
        self.pipeline = pipeline
        self.upstream = upstream
        self.rewriter = rewriter
        self.auditor = auditor
        self.metrics = metrics
        self.forward_auth = forward_auth
        self.decision_log = decision_log
        self.traffic = traffic  # rate limits and load shedding (ratelimit/)
        self.shadow: ShadowRunner | None = None  # candidate policies, offered each decision after the response

    async def proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Decide, then forward the request and stream the upstream's answer back."""
        started = time.perf_counter()
        request = RequestDescription.from_scope(scope)
        if self.forward_auth.only:
            outcome = self.pipeline.refusal(request, RouteNotFound(
                "proxying_disabled", detail="forward_auth.only: the proxy forwards nothing"))
        else:
            outcome = await self.pipeline.decide(request, admit=self.admitter(forwarding=True))

        async def forward(send: Send) -> int:
            ctx = outcome.ctx
            assert ctx is not None and ctx.route is not None
            headers = self.rewriter.upstream_request_headers(ctx, outcome.upstream_headers, outcome.upstream_removed,
                                                             preserve_host=ctx.route.settings.preserve_host)
            return await self.upstream.forward(ctx, ctx.route, headers, receive, send,
                                               extra_response_headers=outcome.client_headers)

        await self.respond(scope, outcome, send, forward, started)

    async def forward_auth_check(self, scope: Scope, receive: Receive, send: Send) -> None:
        """/.iam/auth: decide the request a trusted front proxy describes, and answer with the headers
        to set upstream (200) or the refusal; nothing is forwarded."""
        started = time.perf_counter()
        try:
            request = RequestDescription.from_scope(self.forward_auth.describe(scope))
        except ProxyError as exc:
            outcome = self.pipeline.refusal(RequestDescription.from_scope(scope), exc)
        else:
            outcome = await self.pipeline.decide(request, admit=self.admitter(forwarding=False))

        async def answer(send: Send) -> int:
            return await self.forward_auth.answer_allowed(send, outcome.upstream_headers, outcome.client_headers)

        await self.respond(scope, outcome, send, answer, started, refusal_headers)

    def admitter(self, forwarding: bool) -> Admit | None:
        """The rate limits' check for an allowed request; load shedding applies to what is forwarded."""
        traffic = self.traffic
        if traffic is None:
            return None

        async def admit(ctx: RequestContext, identity: Identity, decision: Decision) -> Admission:
            assert ctx.route is not None
            return await traffic.admit(identity, ctx.route.id, self.rewriter.client_address(ctx), decision,
                                       forwarding=forwarding)
        return admit

    async def respond(self, scope: Scope, outcome: Outcome, send: Send, answer: Answer, started: float,
                       describe_refusal: Callable[[ProxyError], list[tuple[str, str]]] | None = None) -> None:
        audit = outcome.audit
        status = 500

        def log_decision(event: dict[str, Any]) -> None:
            if self.decision_log is not None and audit.policy_input is not None:
                self.decision_log.emit(event, audit.policy_input)

        audited = AuditedResponse(send, self.auditor, audit.event, log_decision)
        try:
            try:
                if outcome.error is None:
                    status = await answer(audited)
            except ProxyError as exc:  # the upstream could not be reached, or did not answer in time
                self.pipeline.refuse(outcome, exc)
            if outcome.error is not None:
                error_id = audit.ctx.decision_id if audit.ctx is not None else "-"
                status = await send_error(audited, outcome.error, error_id, head_only=scope.get("method") == "HEAD",
                                          authn_headers=dict(outcome.client_headers),
                                          extra_headers=describe_refusal(outcome.error) if describe_refusal else ())
        except ClientDisconnected:
            status, audit.outcome, audit.reason = 499, "error", "client_disconnected"
        except UpstreamResponseFailed as exc:
            log.warning("upstream failed mid-response for %s: %s",
                        audit.ctx.decision_id if audit.ctx is not None else "-", exc)
            audit.outcome, audit.reason = "error", "upstream_response_failed"
            raise
        except Exception:
            log.exception("unexpected error in request %s", audit.ctx.decision_id if audit.ctx is not None else "-")
            status, audit.outcome, audit.reason = 500, "error", "internal_error"
            await send_error(audited, ProxyError(), audit.ctx.decision_id if audit.ctx is not None else "-")
        finally:
            if outcome.admission is not None:
                outcome.admission.release(status)
            audited.finish(status)
            if audited.refused:
                audit.outcome, audit.reason = "error", "audit_unavailable"
            route = audit.ctx.route.id if audit.ctx is not None and audit.ctx.route is not None else ""
            self.metrics.child(self.metrics.requests, route, audit.outcome, audit.reason).inc()
            self.metrics.child(self.metrics.latency, audit.outcome).observe(time.perf_counter() - started)
            if self.shadow is not None and audit.policy_input is not None and audit.ctx is not None:
                self.shadow.offer(audit.ctx, audit.policy_input, audit.decision, audit.reason)
