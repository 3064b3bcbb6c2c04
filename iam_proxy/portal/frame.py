"""One frame for the proxy's own endpoints under /.iam/: a path table, and one mapping from an error
to its response and its audit event.

An endpoint is a path, its methods, a handler over (context, receive, send) that returns the status
it sent, and the reason code its success is audited under. The frame reads the request, finds the
endpoint (404 for any other path or method), and answers every failure the same way: a refusal the
client caused is "denied", anything else "error"; the response is the endpoint family's error page;
the event is recorded before the response's last byte (audit/writeahead.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from ..audit.auditor import Auditor
from ..audit.event import endpoint_event
from ..audit.writeahead import AuditedResponse
from ..context import RequestContext, RequestDescription, request_context
from ..core.asgi import Receive, Scope, Send
from ..core.errors import ProxyError, RouteNotFound
from ..core.responses import send_error

log = logging.getLogger("iam_proxy.portal")

Handler = Callable[[RequestContext, Receive, Send], Awaitable[int]]
ErrorPage = Callable[[RequestContext | None, Send, ProxyError], Awaitable[int]]


@dataclass(frozen=True)
class Endpoint:
    path: str
    methods: frozenset[str]
    handler: Handler
    reason: str  # the audit reason of a success


async def problem_page(ctx: RequestContext | None, send: Send, error: ProxyError) -> int:
    """The default error response: problem details (RFC 9457) with the error id."""
    return await send_error(send, error, ctx.decision_id if ctx is not None else "-")


class Frame:
    def __init__(self, endpoints: list[Endpoint], auditor: Auditor, error_page: ErrorPage = problem_page) -> None:
        self._table = {(e.path, method): e for e in endpoints for method in e.methods}
        self.paths = frozenset(e.path for e in endpoints)
        self._auditor = auditor
        self._error_page = error_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = RequestDescription.from_scope(scope)
        ctx: RequestContext | None = None
        status, outcome, reason = 500, "error", "internal_error"

        def event(sent: int, response: str) -> dict[str, Any]:
            return endpoint_event(ctx=ctx, request=request, status=sent, outcome=outcome, reason=reason,
                                  response=response)

        audited = AuditedResponse(send, self._auditor, event)
        try:
            ctx = request_context(request)
            endpoint = self._table.get((ctx.path, ctx.method))
            if endpoint is None:
                raise RouteNotFound()
            outcome, reason = "allowed", endpoint.reason
            status = await endpoint.handler(ctx, receive, audited)
        except ProxyError as exc:
            level = logging.WARNING if exc.status >= 500 else logging.INFO
            log.log(level, "%s %s refused (%s): %s", request.method, request.path,
                    ctx.decision_id if ctx else "-", exc)
            outcome, reason = ("denied" if exc.status < 500 else "error"), exc.reason
            status = await self._error_page(ctx, audited, exc)
        except Exception:
            log.exception("unexpected error on %s", request.path)
            outcome, reason = "error", "internal_error"
            status = await self._error_page(ctx, audited, ProxyError())
        finally:
            audited.finish(status)
