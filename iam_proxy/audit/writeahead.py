"""Write-ahead auditing: a request's event is durable before its response completes.

Every front door (the proxy pipeline and forward-auth, the /.iam portal, the SAML endpoints) sends
its response through an `AuditedResponse`, and audits in no other way:

* `http.response.start` is held until the first body message, and they leave together;
* before the last body message leaves, `build(status, "complete")` makes the event and the Auditor
  records it (appends it to the spool, or writes the local file when there is no spool);
* `finish(status)`, in the front door's `finally`, records a request whose response never
  completed (the client went away, the upstream broke mid-body) as `response: "incomplete"`.

So a client can never hold a complete response whose event could still be lost to a crash.

When the event cannot be built or recorded, `audit.on_failure` decides: `deny` (the default) sends
503 audit_unavailable instead if nothing has left yet, and otherwise withholds the last message, so
the client never gets a complete response (the server closes the connection); `allow` lets the
response complete. Either way the failure is logged and counted
(`iam_proxy_audit_record_failures_total{action="refused"|"answered"}`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable

from ..core.errors import AuditUnavailable
from ..core.responses import send_error
from .auditor import AuditRecordError, Auditor

log = logging.getLogger("iam_proxy.audit")

EventBuilder = Callable[[int, str], dict[str, Any]]  # (status, "complete" | "incomplete") -> event


class AuditedResponse:
    """An ASGI `send` that records the request's audit event before the response's last byte."""

    def __init__(self, send, auditor: Auditor, build: EventBuilder,
                 recorded: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._send = send
        self._auditor = auditor
        self._build = build
        self._recorded_hook = recorded
        self._held_start: dict[str, Any] | None = None
        self.status: int | None = None  # as sent in http.response.start
        self.recorded = False  # an attempt was made (it may have failed)
        self.refused = False  # on_failure: deny replaced or cut the response
        self.error_id = "-"  # of a request whose event could not be recorded (in the log and the 503)

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self._held_start, self.status = message, message["status"]
            return
        if message["type"] == "http.response.body" and not message.get("more_body", False) and not self.recorded:
            if not self._record(self.status or 500, "complete") and self._auditor.settings.on_failure == "deny":
                await self._refuse()
                return
        if self._held_start is not None:
            start, self._held_start = self._held_start, None
            await self._send(start)
        await self._send(message)

    def finish(self, status: int) -> None:
        """Record a request whose response did not complete (no-op when it was recorded)."""
        if not self.recorded:
            self._record(self.status or status, "incomplete")

    def _record(self, status: int, response: str) -> bool:
        self.recorded = True
        error_id = "-"
        try:
            event = self._build(status, response)
            error_id = event["decision_id"]
            self._auditor.record(event)
        except AuditRecordError as exc:
            self._failed(error_id, str(exc), response)
            return False
        except Exception:  # noqa: BLE001 - a bug while building or recording is a failure like any other
            error_id = error_id if error_id != "-" else str(uuid.uuid4())
            log.exception("audit: the event of request %s could not be built or recorded", error_id)
            self._failed(error_id, "an unexpected error, logged above", response)
            return False
        if self._recorded_hook is not None:
            self._recorded_hook(event)
        return True

    def _failed(self, error_id: str, reason: str, response: str) -> None:
        deny = self._auditor.settings.on_failure == "deny" or response == "incomplete"
        self._auditor.metrics.count(None, "record_failures:refused" if deny else "record_failures:answered")
        action = ("the request is refused" if response == "complete" and deny else
                  "the response was not completed" if response == "incomplete" else
                  "the request is answered anyway (audit.on_failure: allow)")
        log.error("audit: the event of request %s could not be recorded (%s); %s", error_id, reason, action)
        self.error_id = error_id

    async def _refuse(self) -> None:
        self.refused = True
        if self._held_start is None:
            return  # the head has left: withhold the end, so the response never completes
        self._held_start = None
        await send_error(self._send, AuditUnavailable(), self.error_id)
