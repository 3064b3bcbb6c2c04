"""A local audit file fed from the spool, exactly once.

When a spool is configured it is the durable record of every request, and each file sink is one
more reader of it. The file is written in the same call that appends the event to the spool, so it
is as current as ever; what a crash interrupts between the two is written at the next start. The
file itself says how far it got: its newest event's decision id is looked up after the reader's
cursor (a hint, saved once a second), and feeding resumes just after it. So the file holds each
spooled event once, in spool order, whatever was killed when.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from .metrics import AuditMetrics
from .sinks.file import FileAuditSink
from .spool import Cursor, SpoolReader

log = logging.getLogger("iam_proxy.audit.file")

BATCH = 500
CURSOR_SAVE_SECONDS = 1.0
MAX_RESUME_SCAN = 1_000_000  # records; far more than a second of traffic


class SpooledFile:
    def __init__(self, name: str, sink: FileAuditSink, reader: SpoolReader, metrics: AuditMetrics) -> None:
        self.name, self.sink, self.reader = name, sink, reader
        self._failed = metrics.cell(name, "failed")
        self._written = metrics.cell(name, "delivered")
        self._saved_at = time.monotonic()
        self._resume_after(sink.last_decision_id())

    @property
    def healthy(self) -> bool:
        return self.sink.healthy

    def _resume_after(self, last_id: str | None) -> None:
        """Skip what the file already has: the records up to its newest event, when that event is
        after the cursor (it is within about a second of traffic of it)."""
        if last_id is None:
            return
        marker = b'"decision_id":"' + last_id.encode() + b'"'
        at, scanned = self.reader.cursor, 0
        while scanned < MAX_RESUME_SCAN:
            records, at = self.reader.read_batch(BATCH, at)
            if not records:
                return
            for index, record in enumerate(records):
                if marker in record:
                    self._skip(scanned + index + 1)
                    log.info("audit file %s resumes after its newest event (%d spooled event(s) after the saved "
                             "cursor were already in it)", self.sink.path, scanned + index + 1)
                    return
            scanned += len(records)

    def _skip(self, count: int) -> None:
        while count:
            records, end = self.reader.read_batch(min(count, BATCH))
            self.reader.commit(end, len(records))
            count -= len(records)

    def feed(self, event: dict[str, Any] | None = None, start: Cursor | None = None, length: int = 0) -> None:
        """Write what the file lacks. `event`, spooled at `start` with `length` bytes, is written
        without reading it back when it is the only thing missing."""
        try:
            if event is not None and start is not None and self.reader.cursor == start:
                self.sink.write(event)
                self._advance(Cursor(start.segment, start.offset + length), 1)
            else:
                self.catch_up()
        except Exception:  # noqa: BLE001 - a full disk, or an event this file cannot render
            self.sink.healthy = False
            self._failed.inc()
            log.exception("audit file %s: write failed; the event stays in the spool and is written once the "
                          "file can be written again (new requests get 503 audit_unavailable meanwhile)",
                          self.sink.path)

    def catch_up(self) -> None:
        while True:
            records, end = self.reader.read_batch(BATCH)
            if not records:
                return
            for written, record in enumerate(records):
                try:
                    self.sink.write(orjson.loads(record))
                except BaseException:
                    self._skip(written)  # what did reach the file is not written again
                    self._written.inc(written)
                    raise
            self._advance(end, len(records))

    def _advance(self, cursor: Cursor, count: int) -> None:
        now = time.monotonic()
        save = now - self._saved_at >= CURSOR_SAVE_SECONDS
        self.reader.commit(cursor, count, save=save)
        if save:
            self._saved_at = now
        self._written.inc(count)

    def close(self) -> None:
        self.reader.spool.save_cursor(self.reader)
        self.sink.close()
