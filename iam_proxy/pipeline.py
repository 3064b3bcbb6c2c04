"""The only module that orders the stages of a request:

    route match -> authenticate -> enrich -> build policy input -> decide -> mutate headers -> forward -> audit

Every request, whatever happens to it, ends in exactly one audit event, recorded before its response
completes: the response goes out through an `AuditedResponse` (audit/writeahead.py), which records
the event just before the last byte; the `finally` below records a response that never completed.
Every failure maps to a ProxyError with a status and a reason code; anything unexpected is a 500
`internal_error` whose details go only to the log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .audit.auditor import Auditor
from .audit.event import build_event
from .audit.writeahead import AuditedResponse
from .authn.base import Authenticator
from .authn.identity import Identity
from .context import RequestContext, context_from_scope
from .enrich.base import Enricher
from .errors import (AccessDenied, AuditUnavailable, AuthenticationRequired, BadRequest, InvalidCredential,
                     PolicyError, ProxyError, RouteNotFound)
from .forward.assertion import AssertionSigner
from .forward.headers import HeaderRewriter
from .forward.upstream import ClientDisconnected, UpstreamClient, UpstreamResponseFailed
from .forward_auth import ForwardAuth, refusal_headers
from .header_safety import as_wire, is_method, method_override, safe_value, settable
from .ops.metrics import Metrics
from .policy.decider import Decider
from .policy.decision import Decision
from .policy.decision_log import DecisionLogWriter
from .policy.engine import DecisionOutcome, PolicyEngine
from .policy.input import build_input
from .ratelimit import Admission, Traffic
from .responses import send_error
from .routes.matcher import RouteTable

log = logging.getLogger("iam_proxy.pipeline")


@dataclass
class _Outcome:
    status: int = 500
    outcome: str = "error"
    reason: str = "internal_error"
    facts: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    def __init__(self, *, routes: RouteTable, authenticators: dict[str, Authenticator], engine: PolicyEngine,
                 rewriter: HeaderRewriter, signer: AssertionSigner, upstream: UpstreamClient,
                 auditor: Auditor, metrics: Metrics, include_input: bool = True,
                 decider: Decider | None = None, decision_log: DecisionLogWriter | None = None,
                 enrichers: dict[str, Enricher] | None = None, forward_auth: ForwardAuth | None = None,
                 traffic: Traffic | None = None) -> None:
        self.routes = routes
        self.authenticators = authenticators
        self.enrichers = enrichers or {}
        self.engine = engine
        # The route's engine, the decision cache and decision metrics; one engine for all by default.
        self.decider = decider or Decider({engine.name: engine}, {r.id: engine.name for r in routes.routes},
                                          frozenset(), None, metrics)
        self.decision_log = decision_log
        self.rewriter = rewriter
        self.signer = signer
        self.upstream = upstream
        self.auditor = auditor
        self.metrics = metrics
        self.include_input = include_input
        self.forward_auth = forward_auth or ForwardAuth([], [], only=False)
        self.traffic = traffic
        self.shadow: Any = None  # replay/shadow.py: candidate policies, offered each decision after the response

    async def authenticate(self, ctx: RequestContext) -> Identity:
        """First authenticator that recognises its credential wins; a bad credential stops the chain."""
        assert ctx.route is not None
        chain = [self.authenticators[name] for name in ctx.route.settings.authenticators]
        for authenticator in chain:
            try:
                identity = await authenticator.authenticate(ctx)
            except InvalidCredential as exc:
                exc.challenge = authenticator.challenge  # type: ignore[attr-defined]
                raise
            if identity is not None:
                return identity
        error = _authentication_required(ctx.missing_reason)
        error.challenges = [a.challenge for a in chain if a.challenge]  # type: ignore[attr-defined]
        # A browser on a route with interactive sign-in is sent to log in; API clients get the 401.
        login_urls = [a.login_url(ctx) for a in chain if hasattr(a, "login_url")]
        error.login_url = next((url for url in login_urls if url), None)  # type: ignore[attr-defined]
        raise error

    async def enrich(self, ctx: RequestContext, identity: Identity) -> Identity:
        """The route's enrichers in order; a failing one fails the request (never a half-enriched pass)."""
        assert ctx.route is not None
        if identity.anonymous:
            return identity
        for name in ctx.route.settings.enrichers:
            identity = await self.enrichers[name].enrich(identity, ctx)
        return identity

    async def handle(self, scope: dict[str, Any], receive, send, forward_auth: bool = False) -> None:
        """Proxy one request; with `forward_auth`, answer a front proxy's auth subrequest instead
        (200 with the identity headers to copy upstream, or the error) and forward nothing."""
        ctx: RequestContext | None = None
        result = _Outcome()
        outcome: DecisionOutcome | None = None
        policy_input: dict[str, Any] | None = None
        dry_run = False
        admission: Admission | None = None
        started = time.perf_counter()

        def event(status: int, response: str) -> dict[str, Any]:
            return self._event(scope, ctx, result, status, response, outcome, policy_input, dry_run)

        def log_decision(event: dict[str, Any]) -> None:
            if self.decision_log is not None and policy_input is not None:
                self.decision_log.emit(event, policy_input)

        send = AuditedResponse(send, self.auditor, event, log_decision)
        try:
            if forward_auth:
                scope = self.forward_auth.describe(scope)
            elif self.forward_auth.only:
                raise RouteNotFound("proxying_disabled", detail="forward_auth.only: the proxy forwards nothing")
            ctx = context_from_scope(scope)
            ctx.via = scope.get("iam.via")
            if not self.auditor.admit():
                raise AuditUnavailable()  # the request is refused, not left unaudited
            ctx.route = self.routes.match(ctx.method, ctx.host, ctx.path)
            self._apply_method_override(ctx)
            ctx.identity = await self.enrich(ctx, await self.authenticate(ctx))
            self.rewriter.check_forwardable(ctx.identity)
            policy_input = build_input(ctx)
            route_policy = ctx.route.settings.policy
            try:
                outcome = await self.decider.decide(ctx.route.id, route_policy.path, policy_input)
                allowed = outcome.decision.allowed
            except PolicyError as exc:
                if not route_policy.dry_run:
                    raise
                allowed = False
                # dry run lets it through, but the event must still say which failure happened
                engine = self.decider.engine_for(ctx.route.id)
                outcome = DecisionOutcome(Decision(allowed=False, reasons=(exc.reason,)), route_policy.path,
                                          engine.revision, engine.name)
            if not allowed:
                if not route_policy.dry_run:
                    decision = outcome.decision  # type: ignore[union-attr]
                    raise AccessDenied(list(decision.reasons), status=decision.http_status or 403,
                                       headers=decision.headers, body=decision.body)
                dry_run = True  # dry run: the real decision is audited, the request goes through

            decision = outcome.decision if outcome is not None else None
            result.outcome, result.reason = "allowed", "dry_run_denied" if dry_run else "allowed"
            identity = ctx.identity
            if self.traffic is not None:  # rate limits and load shedding (ratelimit/)
                admission = await self.traffic.admit(identity, ctx.route.id, self.rewriter.client_address(ctx),
                                                     decision, forwarding=not forward_auth)
            assertion = None
            if not identity.anonymous:
                assertion = self.signer.sign(identity, audience=ctx.route.settings.assertion_audience
                                             or ctx.route.id, jti=ctx.decision_id)
            policy_headers = decision.headers if decision and decision.allowed else {}
            client_headers = self._client_headers(ctx, decision) + (admission.headers if admission else [])
            if forward_auth:
                result.status = await self.forward_auth.answer_allowed(
                    send, self.rewriter.identity_headers(identity, assertion)
                    + self.rewriter.policy_headers(policy_headers), client_headers)
            else:
                headers = self.rewriter.upstream_request_headers(
                    ctx, identity, assertion, extra=policy_headers,
                    remove=decision.request_headers_to_remove if decision and decision.allowed else (),
                    preserve_host=ctx.route.settings.preserve_host,
                )
                result.status = await self.upstream.forward(
                    ctx, ctx.route, headers, receive, send, extra_response_headers=client_headers,
                )
        except ProxyError as exc:
            if exc.status >= 500 or isinstance(exc, PolicyError):
                log.warning("request %s failed: %s", ctx.decision_id if ctx else "-", exc)
            elif isinstance(exc, InvalidCredential) or exc.facts:
                log.info("request %s refused: %s", ctx.decision_id if ctx else "-", exc)
            result.facts = exc.facts
            # A refusal the client caused (no route, no or bad credential, policy) is "denied";
            # anything the proxy or a dependency failed at is "error".
            result.outcome = "denied" if exc.status < 500 else "error"
            result.reason = exc.reason
            error_id = ctx.decision_id if ctx else "-"
            result.status = await send_error(send, exc, error_id, head_only=scope.get("method") == "HEAD",
                                             authn_headers=ctx.response_headers if ctx else None,
                                             extra_headers=refusal_headers(exc) if forward_auth else ())
        except ClientDisconnected:
            result.status, result.outcome, result.reason = 499, "error", "client_disconnected"
        except UpstreamResponseFailed as exc:
            log.warning("upstream failed mid-response for %s: %s", ctx.decision_id if ctx else "-", exc)
            result.outcome, result.reason = "error", "upstream_response_failed"
            raise
        except Exception:
            log.exception("unexpected error in request %s", ctx.decision_id if ctx else "-")
            result.status, result.outcome, result.reason = 500, "error", "internal_error"
            await send_error(send, ProxyError(), ctx.decision_id if ctx else "-")
        finally:
            if admission is not None:
                admission.release(result.status)
            send.finish(result.status)
            if send.refused:
                result.outcome, result.reason = "error", "audit_unavailable"
            self.metrics.requests.labels(route=ctx.route.id if ctx and ctx.route else "",
                                         outcome=result.outcome, reason=result.reason).inc()
            self.metrics.latency.labels(outcome=result.outcome).observe(time.perf_counter() - started)
            if self.shadow is not None and policy_input is not None and ctx is not None:
                self.shadow.offer(ctx, policy_input, outcome, result.reason)

    @staticmethod
    def _apply_method_override(ctx: RequestContext) -> None:
        """On a route that honours method overrides, the policy decides on the overridden method
        (elsewhere the header is dropped before forwarding, so the decided method is the one run)."""
        assert ctx.route is not None
        if not ctx.route.settings.method_override:
            return
        method = method_override(ctx.headers)
        if method is None:
            return
        if not is_method(method):
            raise BadRequest("method_override_invalid", message="The method override is not a method.")
        ctx.method = method

    @staticmethod
    def _client_headers(ctx: RequestContext, decision: Decision | None) -> list[tuple[str, str]]:
        """For the client: what authenticators set (session cookie, Negotiate token) and the policy's
        response_headers_to_add, never a framing or hop-by-hop header."""
        added = decision.response_headers_to_add if decision is not None and decision.allowed else {}
        return [(name, as_wire(value)) for name, value in [*ctx.response_headers.items(), *added.items()]
                if settable(name) and safe_value(value)]

    def _event(self, scope, ctx, result: _Outcome, status: int, response: str, outcome, policy_input,
               dry_run: bool) -> dict[str, Any]:
        return build_event(
            ctx=ctx, scope=scope, status=status, outcome=result.outcome, reason=result.reason,
            decision=outcome, policy_input=policy_input,
            policy_revision=self.decider.engine_for(ctx.route.id).revision if ctx and ctx.route
            else self.engine.revision,
            client_address=self.rewriter.client_address(ctx) if ctx else None,
            dry_run=dry_run, include_input=self.include_input, response=response, facts=result.facts,
        )


_MISSING_MESSAGES = {"session_revoked": "The session has ended (signed out); sign in again.",
                     "session_expired": "The session has expired; sign in again."}


def _authentication_required(missing_reason: str | None) -> AuthenticationRequired:
    """credential_missing, or why a session cookie that was there no longer counts."""
    if missing_reason in _MISSING_MESSAGES:
        return AuthenticationRequired(missing_reason, message=_MISSING_MESSAGES[missing_reason])
    return AuthenticationRequired()
