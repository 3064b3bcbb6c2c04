"""The only module that orders the stages of a request, and sends nothing:

    route match -> authenticate -> enrich -> build policy input -> decide -> the headers to set

`Pipeline.decide(request)` takes a request description and returns its `Outcome`: the identity, the
decision, the headers the upstream gets and the client gets, and the audit draft. Every front door
calls it: the HTTP proxy and forward-auth (frontdoor.py), `iam-proxy explain`, and an ext_authz
server. What happens next, forwarding and the response, is the front door's; so is completing the
audit event, which it does in one place (frontdoor.py) before the response's last byte.

Every refusal is a ProxyError with a status and a reason code, carried in the outcome; anything
unexpected is a 500 `internal_error` whose details go only to the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from .audit.auditor import Auditor
from .audit.event import AuditDraft
from .authn.base import Authenticator, Interactive
from .context import RequestContext, RequestDescription, request_context
from .core.decision import Decision, DecisionOutcome
from .core.errors import (AccessDenied, AuditUnavailable, AuthenticationRequired, BadRequest, InvalidCredential,
                          PolicyError, ProxyError)
from .core.header_safety import as_wire, is_method, method_override, safe_value, settable
from .core.identity import Identity
from .enrich.base import Enricher
from .forward.assertion import AssertionSigner
from .forward.headers import HeaderRewriter
from .policy.decider import Decider
from .policy.input import build_input
from .ratelimit import Admission
from .routes.matcher import RouteTable

log = logging.getLogger("iam_proxy.pipeline")

Headers = list[tuple[str, str]]
InputExtension = Callable[[dict[str, Any]], None]
Admit = Callable[[RequestContext, Identity, Decision], Awaitable[Admission]]


@dataclass
class Outcome:
    """What the pipeline concluded about one request. Nothing has been sent."""

    audit: AuditDraft
    error: ProxyError | None = None  # the refusal to answer with; None: let the request through
    # Every header the proxy owns on the upstream request ("" where this identity has no value, so a
    # front proxy overwrites a client's copy), the access token where the route passes it, and the
    # policy's headers.
    upstream_headers: Headers = field(default_factory=list)
    # Request headers the upstream must not get: consumed credentials, the policy's removals.
    upstream_removed: frozenset[str] = frozenset()
    # For the client: what authenticators set (session cookie, Negotiate token), the policy's
    # response_headers_to_add, or the refusal's challenge.
    client_headers: Headers = field(default_factory=list)
    # The rate limits' admission of an allowed request; the front door releases it with the status.
    admission: Admission | None = None

    @property
    def ctx(self) -> RequestContext | None:
        return self.audit.ctx

    @property
    def identity(self) -> Identity | None:
        return self.audit.ctx.identity if self.audit.ctx is not None else None

    @property
    def decision(self) -> DecisionOutcome | None:
        return self.audit.decision


class Pipeline:
    def __init__(self, *, routes: RouteTable, authenticators: dict[str, Authenticator], decider: Decider,
                 rewriter: HeaderRewriter, signer: AssertionSigner, auditor: Auditor,
                 enrichers: dict[str, Enricher] | None = None, include_input: bool = True) -> None:
        self.routes = routes
        self.authenticators = authenticators
        self.enrichers = enrichers or {}
        self.decider = decider  # the route's engine, the decision cache and decision metrics
        self.rewriter = rewriter
        self.signer = signer
        self.auditor = auditor
        self.include_input = include_input

    async def decide(self, request: RequestDescription, identity: Identity | None = None,
                     extend_input: InputExtension | None = None, admit: Admit | None = None) -> Outcome:
        """The outcome of `request`. `identity`, when given, stands for what the route's
        authenticators would have found (`iam-proxy explain --identity`); `extend_input` adds what a
        front door knows beyond the request to the policy input (an ext_authz CheckRequest's fields);
        `admit` is the front door's rate limits, asked once the policy allows and before the
        assertion is signed (a refused request costs no signature)."""
        outcome = Outcome(AuditDraft(request, include_input=self.include_input))
        try:
            await self._decide(outcome, request, identity, extend_input, admit)
        except ProxyError as exc:
            self.refuse(outcome, exc)
        except Exception:  # noqa: BLE001 - a bug is a 500, its details only in the log
            ctx = outcome.audit.ctx
            log.exception("unexpected error in request %s", ctx.decision_id if ctx else "-")
            self.refuse(outcome, ProxyError())
        # after asking: a remote engine names its revision in its answers
        route = outcome.ctx.route if outcome.ctx is not None else None
        outcome.audit.policy_revision = (self.decider.engine_for(route.id).revision if route is not None
                                         else self.decider.default_revision)
        return outcome

    def refusal(self, request: RequestDescription, error: ProxyError) -> Outcome:
        """The outcome of a request refused before it could be decided (a front door's own check)."""
        outcome = Outcome(AuditDraft(request, policy_revision=self.decider.default_revision,
                                     include_input=self.include_input))
        self.refuse(outcome, error)
        return outcome

    @staticmethod
    def refuse(outcome: Outcome, error: ProxyError) -> None:
        """A refusal the client caused (no route, no or bad credential, policy) is "denied"; anything
        the proxy or a dependency failed at is "error"."""
        ctx = outcome.audit.ctx
        if error.status >= 500 or isinstance(error, PolicyError):
            log.warning("request %s failed: %s", ctx.decision_id if ctx else "-", error)
        elif isinstance(error, InvalidCredential) or error.facts:
            log.info("request %s refused: %s", ctx.decision_id if ctx else "-", error)
        outcome.audit.facts = error.facts
        outcome.error = error
        outcome.audit.outcome = "denied" if error.status < 500 else "error"
        outcome.audit.reason = error.reason
        outcome.client_headers = list(ctx.response_headers.items()) if ctx is not None else []

    async def _decide(self, outcome: Outcome, request: RequestDescription, identity: Identity | None,
                      extend_input: InputExtension | None, admit: Admit | None) -> None:
        audit = outcome.audit
        ctx = audit.ctx = request_context(request)
        audit.client_address = self.rewriter.client_address(ctx)
        if not self.auditor.admit():
            raise AuditUnavailable()  # the request is refused, not left unaudited
        route = ctx.route = self.routes.match(ctx.method, ctx.host, ctx.path)
        self._apply_method_override(ctx)
        found = identity if identity is not None else await self.authenticate(ctx)
        ctx.identity = identity = await self.enrich(ctx, found)
        self.rewriter.check_forwardable(identity)
        audit.policy_input = build_input(ctx)
        if extend_input is not None:
            extend_input(audit.policy_input)
        decision = await self._decision(ctx, audit)
        audit.outcome, audit.reason = "allowed", "dry_run_denied" if audit.dry_run else "allowed"
        if admit is not None:
            outcome.admission = await admit(ctx, identity, decision)
        assertion = None
        if not identity.anonymous:
            assertion = await self.signer.sign(identity, audience=route.settings.assertion_audience or route.id,
                                               jti=ctx.decision_id)
        allowed = decision if decision.allowed else Decision(allowed=False)
        outcome.upstream_headers = self.rewriter.set_headers(ctx, identity, assertion, allowed.headers)
        outcome.upstream_removed = frozenset({*ctx.consumed_headers,
                                              *(name.lower() for name in allowed.request_headers_to_remove)})
        outcome.client_headers = [(name, as_wire(value)) for name, value in
                                  [*ctx.response_headers.items(), *allowed.response_headers_to_add.items()]
                                  if settable(name) and safe_value(value)]
        if outcome.admission is not None:
            outcome.client_headers += outcome.admission.headers

    async def _decision(self, ctx: RequestContext, audit: AuditDraft) -> Decision:
        """The route's decision; a denial raises, unless the route runs its policy dry (then the
        real decision is audited and the request goes through)."""
        assert ctx.route is not None and audit.policy_input is not None
        route_policy = ctx.route.settings.policy
        try:
            audit.decision = await self.decider.decide(ctx.route.id, route_policy.path, audit.policy_input)
        except PolicyError as exc:
            if not route_policy.dry_run:
                raise
            # dry run lets it through, but the event must still say which failure happened
            engine = self.decider.engine_for(ctx.route.id)
            audit.decision = DecisionOutcome(Decision(allowed=False, reasons=(exc.reason,)), route_policy.path,
                                             engine.revision, engine.name)
        decision = audit.decision.decision
        if not decision.allowed:
            if not route_policy.dry_run:
                raise AccessDenied(list(decision.reasons), status=decision.http_status or 403,
                                   headers=decision.headers, body=decision.body)
            audit.dry_run = True
        return decision

    async def authenticate(self, ctx: RequestContext) -> Identity:
        """First authenticator that recognises its credential wins; a bad credential stops the chain."""
        assert ctx.route is not None
        chain = [self.authenticators[name] for name in ctx.route.settings.authenticators]
        for authenticator in chain:
            try:
                identity = await authenticator.authenticate(ctx)
            except InvalidCredential as exc:
                exc.challenge = authenticator.challenge
                raise
            if identity is not None:
                return identity
        error = _authentication_required(ctx.missing_reason)
        error.challenges = [a.challenge for a in chain if a.challenge]
        # A browser on a route with interactive sign-in is sent to log in; API clients get the 401.
        login_urls = [url for a in chain if isinstance(a, Interactive) and (url := a.login_url(ctx))]
        error.login_url = login_urls[0] if login_urls else None
        raise error

    async def enrich(self, ctx: RequestContext, identity: Identity) -> Identity:
        """The route's enrichers in order; a failing one fails the request (never a half-enriched pass)."""
        assert ctx.route is not None
        if identity.anonymous:
            return identity
        for name in ctx.route.settings.enrichers:
            identity = await self.enrichers[name].enrich(identity, ctx)
        return identity

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


_MISSING_MESSAGES = {"session_revoked": "The session has ended (signed out); sign in again.",
                     "session_expired": "The session has expired; sign in again."}


def _authentication_required(missing_reason: str | None) -> AuthenticationRequired:
    """credential_missing, or why a session cookie that was there no longer counts."""
    if missing_reason in _MISSING_MESSAGES:
        return AuthenticationRequired(missing_reason, message=_MISSING_MESSAGES[missing_reason])
    return AuthenticationRequired()
