"""`Decide` on the pipeline: a check is a request description, decided by `Pipeline.decide` and
answered through the front doors' `respond` (audit event, metrics, rate limits, shadow policies), and
the outcome becomes a `Verdict`: the headers the proxy would send upstream, as changes to the ones
the request has.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..context import RequestDescription
from ..core.errors import PolicyError, RouteNotFound
from ..core.header_safety import HOP_BY_HOP
from ..core.networks import TrustedNetworks
from ..forward.headers import FORWARDED
from ..frontdoor import FrontDoors
from ..pipeline import Outcome
from .check import Check, Verdict, as_bytes, as_text
from .envoy_input import add_envoy_fields

log = logging.getLogger("iam_proxy.extauthz")

# Envoy's own: pseudo-headers and Host cannot be changed by a check; forwarding headers and the
# request id are its edge's
_NOT_OURS = frozenset({"host", *FORWARDED, *HOP_BY_HOP, "x-request-id"})


class NotServed(RouteNotFound):
    """A check asked by a peer that is not one of ext_authz.trusted_peers."""

    reason = "ext_authz_not_served"


class _Answer:
    """The ASGI messages a refusal is sent as, kept for the Verdict."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status, self.headers = message["status"], list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


def _request(check: Check, peer: str) -> RequestDescription:
    path, _, query = check.path.partition("?")
    headers = [(k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape")) for k, v in check.headers]
    if check.header("host") is None:
        headers.append((b"host", as_bytes(check.host)))
    return RequestDescription(method=check.method, scheme=check.scheme, raw_path=as_bytes(path),
                              query_string=as_bytes(query), headers=headers, peer=peer,
                              http_version=check.protocol.removeprefix("HTTP/"), via=check.via)


def _text(wire: str) -> str:
    """The pipeline's latin-1 string of a header's bytes, as the text a Check holds."""
    return wire if wire.isascii() else as_text(wire.encode("latin-1"))


class PipelineDecide:
    """`trusted_peers`: who may ask for a check on another's behalf (a Check with `via`)."""

    def __init__(self, doors: FrontDoors, trusted_peers: list[str]) -> None:
        self._doors = doors
        self._trusted = TrustedNetworks(trusted_peers)
        names = doors.rewriter.settings
        self._owned = frozenset(n.lower() for n in [*doors.rewriter.identity_names, names.access_token])

    async def __call__(self, check: Check) -> Verdict:
        pipeline = self._doors.pipeline
        if check.via is not None and check.via not in self._trusted:
            outcome = pipeline.refusal(_request(check, check.via), NotServed(
                message="Not found.", detail=f"ext_authz check from untrusted peer {check.via}"))
        else:
            outcome = await pipeline.decide(_request(check, check.client),
                                            extend_input=lambda doc: add_envoy_fields(doc, check),
                                            admit=self._doors.admitter(forwarding=False))
            raw = outcome.decision.decision.raw if outcome.decision is not None else None
            if outcome.error is None and isinstance(raw, dict) \
                    and not isinstance(raw.get("dynamic_metadata", {}), dict):
                pipeline.refuse(outcome, PolicyError("policy_malformed",
                                                     detail="decision: dynamic_metadata must be an object"))
        answer = _Answer()

        async def allowed(send: Any) -> int:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return 200

        try:
            started = outcome.ctx.started if outcome.ctx is not None else time.perf_counter()
            await self._doors.respond({"method": check.method}, outcome, answer.send, allowed, started)
        except Exception:  # noqa: BLE001 - the front door audits and answers; whatever escapes it denies
            log.exception("check from %s failed", check.via)
            answer.status = 500
        if outcome.error is not None or answer.status != 200 or outcome.ctx is None:
            return self._refusal(answer)
        return self._allowed(outcome, check)

    @staticmethod
    def _refusal(answer: _Answer) -> Verdict:
        headers = [(_text(k.decode("latin-1")), _text(v.decode("latin-1"))) for k, v in answer.headers
                   if k != b"content-length"]  # the refusal itself: Envoy frames its own answer
        status = answer.status if answer.status != 200 else 500
        return Verdict(allowed=False, status=status, decision_id=dict(headers).get("x-iam-error-id", "-"),
                       client_headers=headers, body=bytes(answer.body))

    def _allowed(self, outcome: Outcome, check: Check) -> Verdict:
        """The headers the proxy would have sent upstream, as changes to the ones the request has."""
        ctx = outcome.ctx
        assert ctx is not None and ctx.route is not None
        decision = outcome.decision.decision if outcome.decision is not None else None
        sent = self._doors.rewriter.upstream_request_headers(ctx, outcome.upstream_headers, outcome.upstream_removed,
                                                             preserve_host=True)
        forward = [(name.lower(), _text(value)) for name, value in sent]
        values: dict[str, list[str]] = {}
        for name, value in forward:
            if _changeable_lower(name):
                values.setdefault(name, []).append(value)
        inbound: dict[str, list[str]] = {}
        for name, value in check.headers:
            inbound.setdefault(name, []).append(value)
        upstream = [(name, value) for name, value in forward if name in values and inbound.get(name) != values[name]]
        # Removed even when Envoy did not show them (HTTP mode sends only its allowed_headers): the
        # policy's removals, and the identity headers the proxy owns but has no value for this time.
        named = {name.lower() for name in decision.request_headers_to_remove} if decision else set()
        remove = sorted(name for name in {*inbound, *named, *self._owned}
                        if name not in values and _changeable(name))
        metadata = decision.raw.get("dynamic_metadata") if decision and isinstance(decision.raw, dict) else None
        return Verdict(allowed=True, status=200, decision_id=ctx.decision_id, upstream_headers=upstream,
                       remove_headers=remove, client_headers=[(n, _text(v)) for n, v in outcome.client_headers],
                       dynamic_metadata=metadata, forward_headers=forward,
                       upstream_url=self._doors.upstream.url_for(ctx, ctx.route),
                       route={"id": ctx.route.id, "upstream": ctx.route.settings.upstream},
                       identity=ctx.identity.summary() if ctx.identity is not None else None,
                       expires_at=ctx.identity.expires_at if ctx.identity is not None else None)


def _changeable(name: str) -> bool:
    return _changeable_lower(name.lower())


def _changeable_lower(name: str) -> bool:
    return not name.startswith(":") and name not in _NOT_OURS
