"""`Decide` on today's pipeline: a check goes through the pipeline's forward-auth front door.

Forward-auth already does what a check needs and forwards nothing: route, authenticate, enrich,
decide, sign the assertion, audit one event, answer. This adapter gives a copy of the pipeline a
front of its own in place of the nginx/Traefik one, watches the decision and the request context
go by (a context variable holds the check in progress), and turns the answer into a `Verdict`:
the headers the proxy would have sent upstream, compared with the ones the request has.

When the pipeline's `decide()` (issue 16) lands, this module is the one to replace.
"""

from __future__ import annotations

import copy
import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from ..context import RequestContext
from ..errors import PolicyError, RouteNotFound
from ..forward.headers import FORWARDED, HeaderRewriter, TrustedProxies
from ..header_safety import HOP_BY_HOP
from ..pipeline import Pipeline
from ..policy.decider import Decider
from ..policy.engine import DecisionOutcome
from .check import Check, Verdict, as_bytes, as_text
from .envoy_input import add_envoy_fields

log = logging.getLogger("iam_proxy.extauthz")

# Envoy's own: pseudo-headers and Host cannot be changed by a check, forwarding headers are its edge's
_NOT_OURS = frozenset({"host", *FORWARDED, *HOP_BY_HOP})
# forward-auth's description of a refusal for nginx; Envoy gets the refusal itself
_FORWARD_AUTH_ONLY = frozenset({"x-iam-status", "x-iam-reason", "x-iam-reasons", "x-iam-location",
                                "content-length"})


@dataclass
class _InProgress:
    check: Check
    ctx: RequestContext | None = None
    outcome: DecisionOutcome | None = None
    answered: list[tuple[str, str]] | None = None  # forward-auth's upstream headers, when allowed
    client_headers: list[tuple[str, str]] = field(default_factory=list)
    status: int = 500
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status, self.headers = message["status"], list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


_current: ContextVar[_InProgress] = ContextVar("iam_proxy_extauthz_check")


class NotServed(RouteNotFound):
    """A check asked by a peer that is not one of ext_authz.trusted_peers."""

    reason = "ext_authz_not_served"


class _EnvoyFront:
    """The pipeline's forward-auth front (see forward_auth.ForwardAuth) for a check: the request
    is described by the check itself, and the answer is kept instead of sent as headers."""

    only = False

    def __init__(self, trusted_peers: list[str]) -> None:
        self._trusted = TrustedProxies(trusted_peers)

    def describe(self, scope: dict[str, Any]) -> dict[str, Any]:
        """The request the check describes; a check from anyone but a trusted Envoy is refused (and
        audited with the caller's address, as forward-auth's are)."""
        via = scope.get("iam.via")
        if via is not None and via not in self._trusted:
            raise NotServed(message="Not found.", detail=f"ext_authz check from untrusted peer {via}")
        return {**scope, "client": (scope["iam.client"], 0)}

    @staticmethod
    async def answer_allowed(send, request_headers: list[tuple[str, str]],
                             client_headers: list[tuple[str, str]]) -> int:
        check = _current.get()
        check.answered = [(name, _text(value)) for name, value in request_headers]
        check.client_headers = [(name, _text(value)) for name, value in client_headers]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return 200


class _EnvoyDecider:
    """The route's decider, asked with Envoy's fields added to the input; the outcome is kept."""

    def __init__(self, decider: Decider) -> None:
        self._decider = decider

    def engine_for(self, route_id: str):
        return self._decider.engine_for(route_id)

    async def decide(self, route_id: str, path: str, policy_input: dict[str, Any]) -> DecisionOutcome:
        check = _current.get()
        add_envoy_fields(policy_input, check.check)
        outcome = await self._decider.decide(route_id, path, policy_input)
        raw = outcome.decision.raw
        if isinstance(raw, dict) and not isinstance(raw.get("dynamic_metadata", {}), dict):
            raise PolicyError("policy_malformed", detail=f"decision {path}: dynamic_metadata must be an object")
        check.outcome = outcome
        return outcome


def _scope(check: Check) -> dict[str, Any]:
    path, _, query = check.path.partition("?")
    headers = [(as_bytes(k), as_bytes(v)) for k, v in check.headers]
    if check.header("host") is None:
        headers.append((b"host", as_bytes(check.host)))
    return {"type": "http", "method": check.method, "scheme": check.scheme, "path": unquote(path),
            "raw_path": as_bytes(path), "query_string": as_bytes(query), "headers": headers,
            "client": (check.via or check.client, 0), "http_version": check.protocol.removeprefix("HTTP/"),
            "iam.via": check.via, "iam.client": check.client}


def _text(wire: str) -> str:
    """The pipeline's latin-1 string of a header's bytes, as the text a Check holds."""
    return as_text(wire.encode("latin-1"))


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class PipelineDecide:
    """`trusted_peers`: who may ask for a check on another's behalf (a Check with `via`)."""

    def __init__(self, pipeline: Pipeline, trusted_peers: list[str]) -> None:
        self._pipeline = copy.copy(pipeline)
        self._pipeline.forward_auth = _EnvoyFront(trusted_peers)  # type: ignore[assignment]
        self._pipeline.decider = _EnvoyDecider(pipeline.decider)  # type: ignore[assignment]
        self._pipeline.enrich = self._enrich  # type: ignore[method-assign]
        self._enrich_with = pipeline.enrich
        self._rewriter: HeaderRewriter = pipeline.rewriter
        self._upstream = pipeline.upstream
        names = self._rewriter.settings
        self._owned = frozenset(n.lower() for n in [*self._rewriter.identity_names, names.access_token])

    async def _enrich(self, ctx: RequestContext, identity):
        _current.get().ctx = ctx
        return await self._enrich_with(ctx, identity)

    async def __call__(self, check: Check) -> Verdict:
        state = _InProgress(check)
        token = _current.set(state)
        try:
            await self._pipeline.handle(_scope(check), _no_body, state.send, forward_auth=True)
        except Exception:  # noqa: BLE001 - the pipeline audits and answers; whatever escapes it denies
            log.exception("check from %s failed", check.via)
            state.answered, state.status = None, 500
        finally:
            _current.reset(token)
        if state.answered is None or state.status != 200 or state.ctx is None:
            return self._refusal(state)
        return self._allowed(state, state.ctx)

    @staticmethod
    def _refusal(state: _InProgress) -> Verdict:
        headers = [(_text(k.decode("latin-1")), _text(v.decode("latin-1"))) for k, v in state.headers
                   if k.decode("latin-1") not in _FORWARD_AUTH_ONLY]
        status = state.status if state.status != 200 else 500
        return Verdict(allowed=False, status=status, decision_id=dict(headers).get("x-iam-error-id", "-"),
                       client_headers=headers, body=bytes(state.body))

    def _allowed(self, state: _InProgress, ctx: RequestContext) -> Verdict:
        """The headers the proxy would have sent upstream, as changes to the ones the request has."""
        decision = state.outcome.decision if state.outcome is not None else None
        assertion = dict(state.answered or ()).get(self._rewriter.settings.assertion.header)
        wanted = self._rewriter.upstream_request_headers(
            ctx, ctx.identity, assertion or None, extra=decision.headers if decision else {},
            remove=decision.request_headers_to_remove if decision else (), preserve_host=True)
        forward = [(name.lower(), _text(value)) for name, value in wanted]
        wanted = [(name, value) for name, value in forward if _changeable(name)]
        inbound: dict[str, list[str]] = {}
        for name, value in state.check.headers:
            inbound.setdefault(name, []).append(value)
        values: dict[str, list[str]] = {}
        for name, value in wanted:
            values.setdefault(name, []).append(value)
        upstream = [(name, value) for name, value in wanted if inbound.get(name) != values[name]]
        # Removed even when Envoy did not show them (HTTP mode sends only its allowed_headers): the
        # policy's removals, and the identity headers the proxy owns but has no value for this time.
        named = {name.lower() for name in decision.request_headers_to_remove} if decision else set()
        remove = sorted(name for name in {*inbound, *named, *self._owned}
                        if _changeable(name) and name not in values)
        metadata = decision.raw.get("dynamic_metadata") if decision and isinstance(decision.raw, dict) else None
        return Verdict(allowed=True, status=200, decision_id=ctx.decision_id, upstream_headers=upstream,
                       remove_headers=remove, client_headers=state.client_headers, dynamic_metadata=metadata,
                       forward_headers=forward, upstream_url=self._upstream.url_for(ctx, ctx.route),
                       route={"id": ctx.route.id, "upstream": ctx.route.settings.upstream},
                       identity=ctx.identity.summary() if ctx.identity is not None else None,
                       expires_at=ctx.identity.expires_at if ctx.identity is not None else None)


def _changeable(name: str) -> bool:
    lower = name.lower()
    return not lower.startswith(":") and lower not in _NOT_OURS and lower != "x-request-id"
