"""The Auditor: what the pipeline talks to. `emit(event)` writes the direct sinks and appends the
event to the spool (microseconds, never a network call); delivery tasks ship it from there.
`admit()` says whether a new request may proceed (spool has room, or its policy is drop_oldest;
direct sinks writable), so that with overflow=block the proxy answers 503 instead of losing events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry

from .config import AuditSettings, FileSink, HttpSink, StdoutSink, SyslogSink, sink_name
from .delivery import DeliveryWorker
from .metrics import AuditMetrics
from .privacy import PrivacyFilter
from .render import json_bytes
from .sinks import DirectSink
from .sinks.file import FileAuditSink, StdoutAuditSink
from .sinks.http import HttpAuditSink
from .sinks.syslog import SyslogAuditSink
from .spool import Spool

log = logging.getLogger("iam_proxy.audit")

SPOOL_FULL_LOG_INTERVAL = 10.0


class Auditor:
    def __init__(self, settings: AuditSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = AuditMetrics(registry)
        self.direct: list[tuple[str, DirectSink]] = []
        delivered: list[tuple[str, Any, PrivacyFilter, Any]] = []
        for index, sink_settings in enumerate(settings.sinks):
            name = sink_name(sink_settings, index)
            if isinstance(sink_settings, FileSink):
                self.direct.append((name, FileAuditSink(sink_settings)))
            elif isinstance(sink_settings, StdoutSink):
                self.direct.append((name, StdoutAuditSink(sink_settings)))
            elif isinstance(sink_settings, SyslogSink):
                delivered.append((name, SyslogAuditSink(sink_settings), PrivacyFilter(sink_settings.privacy),
                                  sink_settings))
            elif isinstance(sink_settings, HttpSink):
                delivered.append((name, HttpAuditSink(sink_settings), PrivacyFilter(sink_settings.privacy),
                                  sink_settings))
        self.spool: Spool | None = None
        self.workers: list[DeliveryWorker] = []
        if delivered:
            if settings.spool is None:
                raise ValueError("audit.spool is required by syslog and http sinks")
            self.spool = Spool(settings.spool, [name for name, *_ in delivered], self.metrics)
            for name, sink, privacy, sink_settings in delivered:
                self.workers.append(DeliveryWorker(
                    name, sink, self.spool.readers[name], privacy, batch_max_events=sink_settings.batch_max_events,
                    timeout_seconds=sink_settings.timeout_seconds, retry=sink_settings.retry, metrics=self.metrics))
        # Labelled children looked up once: labels() costs more than the write itself.
        self._written = {name: self.metrics.delivered.labels(sink=name) for name, _ in self.direct}
        self._tasks: list[asyncio.Task[None]] = []
        self._last_full_log = 0.0
        self._refused_since_log = 0

    # ------------------------------------------------------------------ request path

    def admit(self) -> bool:
        """Whether a new request may proceed; a refusal is counted."""
        ok = all(sink.healthy for _, sink in self.direct)
        if ok and self.spool is not None and self.settings.spool is not None:
            ok = self.settings.spool.overflow == "drop_oldest" or self.spool.has_room()
        if not ok:
            self.metrics.blocked_requests.inc()
        return ok

    def emit(self, event: dict[str, Any]) -> None:
        for name, sink in self.direct:
            try:
                sink.write(event)
                self._written[name].inc()
            except Exception:  # noqa: BLE001 - one broken sink must not stop the others
                sink.healthy = False
                self.metrics.failed.labels(sink=name).inc()
                self.metrics.dropped.labels(sink=name, reason="write_error").inc()
                log.exception("audit sink %s: write failed; event %s lost for this sink", name,
                              event.get("decision_id"))
        if self.spool is None:
            return
        try:
            accepted = self.spool.append(json_bytes(event) + b"\n")
        except OSError:
            log.exception("audit spool: append failed")
            accepted = False
        if not accepted:
            for worker in self.workers:
                self.metrics.dropped.labels(sink=worker.name, reason="spool_full").inc()
            self._log_refusal()

    def _log_refusal(self) -> None:
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._last_full_log >= SPOOL_FULL_LOG_INTERVAL:
            log.error("audit spool full (%d bytes, overflow: block): %d event(s) could not be spooled; "
                      "new requests get 503 audit_unavailable until a sink catches up",
                      self.spool.total_bytes if self.spool else 0, self._refused_since_log)
            self._last_full_log, self._refused_since_log = now, 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        for worker in self.workers:
            self._tasks.append(asyncio.create_task(worker.run(), name=f"audit-{worker.name}"))

    async def stop(self) -> None:
        """Give the delivery tasks a moment to empty the spool; what remains is sent after restart."""
        if self.spool is not None and self.settings.spool is not None:
            deadline = time.monotonic() + self.settings.spool.shutdown_drain_seconds
            while (time.monotonic() < deadline and any(r.pending for r in self.spool.readers.values())
                   and all(not t.done() for t in self._tasks)):
                await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for worker in self.workers:
            with contextlib.suppress(Exception):
                await worker.sink.close()
        self.close()

    def close(self) -> None:
        for _, sink in self.direct:
            sink.close()
        self.direct = []
        if self.spool is not None:
            self.spool.close()
            self.spool = None
