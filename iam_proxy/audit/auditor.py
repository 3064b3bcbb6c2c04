"""The Auditor: what the front doors talk to.

    admit()        whether a new request may proceed: the spool has room (or its policy is
                   drop_oldest) and the local files can be written; otherwise the request is
                   refused with 503 audit_unavailable instead of being answered unrecorded
    record(event)  make the request's event durable (journal.py), before its response completes
                   (writeahead.py makes sure of that); raises AuditRecordError when it cannot be

Delivery to network sinks happens off the request path, in the journal's delivery tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from ..settings.audit import AuditSettings, StdoutSink, sink_name
from .journal import Journal, SpoolFull, orphan_slots
from .metrics import AuditMetrics, Board
from .render import json_bytes
from .sinks.file import StdoutAuditSink

log = logging.getLogger("iam_proxy.audit")

SPOOL_FULL_LOG_INTERVAL = 10.0
HOUSEKEEPING_SECONDS = 0.5


class AuditRecordError(Exception):
    """The event could not be made durable; `reason` says why (for the log and the metric)."""


class Auditor:
    def __init__(self, settings: AuditSettings, registry: CollectorRegistry | None = None, *,
                 worker: int = 0, workers: int = 1, board: Board | None = None) -> None:
        self.settings = settings
        names = [sink_name(s, i) for i, s in enumerate(settings.sinks)]
        self.metrics = AuditMetrics(names, board or Board(max(workers, worker + 1)), worker)
        self.metrics.refresh = self.publish
        if registry is not None:
            self.metrics.register(registry)
        self.journal = Journal(settings, worker, self.metrics)
        self.orphans = [Journal(settings, slot, self.metrics) for slot in orphan_slots(settings, worker, workers)]
        self.stdout = [(name, StdoutAuditSink(s)) for name, s in zip(names, settings.sinks)
                       if isinstance(s, StdoutSink)]
        self._blocked = self.metrics.cell(None, "blocked_requests")
        self._tasks: list[asyncio.Task[None]] = []
        self._last_full_log = 0.0
        self._refused_since_log = 0

    # ------------------------------------------------------------------ request path

    def admit(self) -> bool:
        """Whether a new request may proceed; a refusal is counted."""
        ok = self.journal.healthy and self.journal.has_room()
        if not ok:
            self._blocked.inc()
        return ok

    def record(self, event: dict[str, Any]) -> None:
        try:
            line = json_bytes(event) + b"\n"
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise AuditRecordError(f"the event cannot be encoded: {exc}") from None
        try:
            self.journal.record(line, event)
        except SpoolFull:
            self._log_spool_full()
            raise AuditRecordError("the spool is full (overflow: block)") from None
        except OSError as exc:
            raise AuditRecordError(f"the audit record cannot be written: {exc}") from None
        for name, sink in self.stdout:  # a copy for container logs, or the only record there is
            try:
                sink.write(event)
            except OSError as exc:
                self.metrics.count(name, "dropped:write_error")
                if not self.journal.durable:
                    raise AuditRecordError(f"stdout, the only audit sink, cannot be written: {exc}") from None

    def _log_spool_full(self) -> None:
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._last_full_log >= SPOOL_FULL_LOG_INTERVAL:
            log.error("audit spool full (overflow: block): %d event(s) could not be spooled; new requests get "
                      "503 audit_unavailable until a sink catches up", self._refused_since_log)
            self._last_full_log, self._refused_since_log = now, 0

    # ------------------------------------------------------------------ metrics

    def publish(self) -> None:
        """Copy this worker's spool gauges into the shared metrics table."""
        queued = dict.fromkeys(self.metrics.sinks, 0)
        size = dict.fromkeys(self.metrics.sinks, 0)
        oldest: dict[str, float] = {}
        for journal in (self.journal, *self.orphans):
            for reader in journal.readers():
                queued[reader.name] += reader.pending
                size[reader.name] += reader.unacknowledged_bytes()
                if reader.pending and reader.oldest_time:
                    oldest[reader.name] = min(oldest.get(reader.name, reader.oldest_time), reader.oldest_time)
        for name in self.metrics.sinks:
            self.metrics.cell(name, "queued").set(queued[name])
            self.metrics.cell(name, "spool_bytes").set(size[name])
            self.metrics.cell(name, "oldest_time").set(oldest.get(name, 0.0))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        for journal in (self.journal, *self.orphans):
            await journal.start()
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="audit-housekeeping"))

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self.journal.retry_files()
            for orphan in [o for o in self.orphans if o.drained]:
                self.orphans.remove(orphan)
                await orphan.retire()
            self.publish()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        drain = self.settings.spool.shutdown_drain_seconds if self.settings.spool else 0.0
        for journal in (self.journal, *self.orphans):
            await journal.stop(drain)
        self.publish()

    def close(self) -> None:
        for journal in (self.journal, *self.orphans):
            journal.close()
