"""One worker's durable audit record: its spool, the local files, and the delivery tasks.

With a spool, an event is appended to it first (the durable record), then written to each local
file from it (filefeed.py), and shipped from it to each network sink by a delivery task
(delivery.py). Without a spool there are no network sinks, and each local file is itself the record.

Every worker has a journal of its own, so nothing is shared between processes: worker 0 uses the
configured spool directory and file paths, worker k (k >= 1) uses `<spool.dir>/worker-<k>/` and the
file path with `.w<k>` before its extension (`audit.w1.jsonl`). Each file is one hash chain.
A journal left by a worker that no longer exists (the service now runs fewer workers) is drained by
a remaining worker: its files are completed, its events delivered, then its spool is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from ..settings.audit import AuditSettings, FileSink, HttpSink, SyslogSink, sink_name
from .delivery import DeliveryWorker
from .filefeed import SpooledFile
from .metrics import AuditMetrics
from .privacy import PrivacyFilter
from .sinks.file import FileAuditSink
from .sinks.http import HttpAuditSink
from .sinks.syslog import SyslogAuditSink
from .spool import Spool

log = logging.getLogger("iam_proxy.audit")


class SpoolFull(Exception):
    """The spool has no room for the event (overflow: block)."""


def slot_path(path: Path, slot: int) -> Path:
    return path if slot == 0 else path.with_name(f"{path.stem}.w{slot}{path.suffix}")


def slot_dir(directory: Path, slot: int) -> Path:
    return directory if slot == 0 else directory / f"worker-{slot}"


def orphan_slots(settings: AuditSettings, worker: int, workers: int) -> list[int]:
    """Journals of workers beyond `workers` that this worker drains (spread over the workers)."""
    if settings.spool is None or not settings.spool.dir.is_dir():
        return []
    slots = []
    for path in settings.spool.dir.glob("worker-*"):
        suffix = path.name.removeprefix("worker-")
        if suffix.isdigit() and int(suffix) >= workers and int(suffix) % workers == worker:
            slots.append(int(suffix))
    return sorted(slots)


def _delivered_sink(settings: SyslogSink | HttpSink):
    return SyslogAuditSink(settings) if isinstance(settings, SyslogSink) else HttpAuditSink(settings)


class Journal:
    def __init__(self, settings: AuditSettings, slot: int, metrics: AuditMetrics) -> None:
        self.slot = slot
        self.spool: Spool | None = None
        self.files: list[SpooledFile] = []
        self.direct_files: list[tuple[str, FileAuditSink]] = []
        self.workers: list[DeliveryWorker] = []
        self._tasks: list[asyncio.Task[None]] = []
        named = [(sink_name(s, i), s) for i, s in enumerate(settings.sinks)]
        files = [(name, s) for name, s in named if isinstance(s, FileSink)]
        delivered = [(name, s) for name, s in named if isinstance(s, (SyslogSink, HttpSink))]
        if settings.spool is None or not (files or delivered):  # a spool nobody reads would only fill up
            self.direct_files = [(name, FileAuditSink(s, slot_path(s.path, slot))) for name, s in files]
            self._written = {name: metrics.cell(name, "delivered") for name, _ in files}
            self._failed = {name: metrics.cell(name, "failed") for name, _ in files}
            return
        spool_settings = settings.spool.model_copy(update={"dir": slot_dir(settings.spool.dir, slot)})
        self.spool = Spool(spool_settings, [name for name, _ in files + delivered], metrics)
        for name, s in files:
            feeder = SpooledFile(name, FileAuditSink(s, slot_path(s.path, slot)), self.spool.readers[name], metrics)
            feeder.feed()  # what a crash left between the spool and the file
            self.files.append(feeder)
        for name, s in delivered:
            self.workers.append(DeliveryWorker(
                name, _delivered_sink(s), self.spool.readers[name], PrivacyFilter(s.privacy),
                batch_max_events=s.batch_max_events, timeout_seconds=s.timeout_seconds, retry=s.retry,
                metrics=metrics))

    # ------------------------------------------------------------------ request path

    @property
    def healthy(self) -> bool:
        return all(f.healthy for f in self.files) and all(sink.healthy for _, sink in self.direct_files)

    def has_room(self) -> bool:
        return self.spool is None or self.spool.settings.overflow == "drop_oldest" or self.spool.has_room()

    def record(self, line: bytes, event: dict[str, Any]) -> None:
        """Make the event durable (`line`: its native JSON and a newline); raises SpoolFull or OSError
        when it could not be."""
        if self.spool is not None:
            start = self.spool.append(line)
            if start is None:
                raise SpoolFull()
            for feeder in self.files:  # a file that fails catches up later: the spool holds the event
                feeder.feed(event, start, len(line))
            return
        for name, sink in self.direct_files:  # no spool: the file is the record, and must take it
            try:
                sink.write(event, native=line[:-1])
            except OSError:
                sink.healthy = False
                self._failed[name].inc()
                raise
            self._written[name].inc()

    @property
    def durable(self) -> bool:
        """Whether anything on disk records the events (a spool or a local file)."""
        return self.spool is not None or bool(self.direct_files)

    def readers(self):
        return self.spool.readers.values() if self.spool is not None else ()

    # ------------------------------------------------------------------ background

    def retry_files(self) -> None:
        for feeder in self.files:
            if not feeder.healthy:
                feeder.feed()

    @property
    def drained(self) -> bool:
        return all(reader.pending == 0 for reader in self.readers())

    async def start(self) -> None:
        for worker in self.workers:
            self._tasks.append(asyncio.create_task(worker.run(), name=f"audit-{worker.name}-{self.slot}"))

    async def stop(self, drain_seconds: float) -> None:
        """Give the delivery tasks a moment to empty the spool; what remains is sent after restart."""
        deadline = time.monotonic() + drain_seconds
        while (time.monotonic() < deadline and any(w.reader.pending for w in self.workers)
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
        for feeder in self.files:
            feeder.close()
        for _, sink in self.direct_files:
            sink.close()
        self.files, self.direct_files = [], []
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    async def retire(self) -> None:
        """Stop a drained journal of a former worker and delete its spool."""
        directory = self.spool.dir if self.spool is not None else None
        await self.stop(0)
        if directory is not None and self.slot > 0:
            shutil.rmtree(directory, ignore_errors=True)
            log.warning("audit: the spool of former worker %d is drained and removed", self.slot)
