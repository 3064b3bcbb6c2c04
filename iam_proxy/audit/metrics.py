"""Audit metrics, one truth for all worker processes.

Each worker counts into its own row of a table of float64 cells (`Board`). With several workers the
table lives in shared memory that the supervisor maps before it forks, so the admin listener
(worker 0) exports every worker's numbers: the usual series per sink, summed over the workers
(`oldest_undelivered_seconds`: the oldest event of any worker), and the spool gauges per worker
(`iam_proxy_audit_worker_*{sink,worker}`) to see which worker's spool holds what.

Counters are bumped where things happen; the spool gauges (queued events, unacknowledged bytes,
oldest event time) are copied into the table by `Auditor.publish`, twice a second and at each scrape.
"""

from __future__ import annotations

import mmap
import time
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

DROP_REASONS = ("drop_oldest", "spool_full", "write_error", "corrupt")
SINK_FIELDS = ("delivered", "retried", "failed", *(f"dropped:{r}" for r in DROP_REASONS),
               "queued", "spool_bytes", "oldest_time")
WORKER_FIELDS = ("blocked_requests", "record_failures:refused", "record_failures:answered")
ROW_BYTES = 64 * 1024  # one worker's row: room for about 800 sinks
EXTRA_CELLS = 64  # per worker, after the audit rows: the listener's counters (listener/counters.py)


class Board:
    """`workers` rows of float64 cells; shared between forked processes when `shared`."""

    def __init__(self, workers: int = 1, shared: bool = False) -> None:
        self.workers = workers
        size = workers * (ROW_BYTES + EXTRA_CELLS * 8)
        self._memory = mmap.mmap(-1, size, flags=mmap.MAP_SHARED) if shared else bytearray(size)
        self.cells = memoryview(self._memory).cast("d")
        self.row_cells = ROW_BYTES // 8

    def extra(self, worker: int) -> memoryview:
        """`worker`'s EXTRA_CELLS cells outside the audit rows."""
        start = self.workers * self.row_cells + worker * EXTRA_CELLS
        return self.cells[start:start + EXTRA_CELLS]


class Cell:
    __slots__ = ("_cells", "_index")

    def __init__(self, cells: memoryview, index: int) -> None:
        self._cells, self._index = cells, index

    def inc(self, amount: float = 1.0) -> None:
        self._cells[self._index] += amount

    def set(self, value: float) -> None:
        self._cells[self._index] = value

    def get(self) -> float:
        return self._cells[self._index]


class AuditMetrics:
    """The audit cells of one worker (`worker`) on a `board`, and the exporter of all workers."""

    def __init__(self, sinks: list[str], board: Board | None = None, worker: int = 0) -> None:
        self.sinks = list(sinks)
        self.board = board or Board()
        self.worker = worker
        needed = len(WORKER_FIELDS) + len(self.sinks) * len(SINK_FIELDS)
        if needed > self.board.row_cells:
            raise ValueError(f"audit: too many sinks ({len(self.sinks)}) for the metrics table")
        self.refresh: Callable[[], None] = lambda: None  # the Auditor's publish, called at each scrape

    def _index(self, worker: int, sink: str | None, field: str) -> int:
        base = worker * self.board.row_cells
        if sink is None:
            return base + WORKER_FIELDS.index(field)
        offset = len(WORKER_FIELDS) + self.sinks.index(sink) * len(SINK_FIELDS)
        return base + offset + SINK_FIELDS.index(field)

    def cell(self, sink: str | None, field: str) -> Cell:
        """This worker's cell; `sink` None for the worker-wide fields (WORKER_FIELDS)."""
        return Cell(self.board.cells, self._index(self.worker, sink, field))

    def count(self, sink: str | None, field: str, amount: float = 1.0) -> None:
        self.board.cells[self._index(self.worker, sink, field)] += amount

    def value(self, sink: str | None, field: str, worker: int | None = None) -> float:
        """One worker's value (this one by default)."""
        return self.board.cells[self._index(self.worker if worker is None else worker, sink, field)]

    def total(self, sink: str | None, field: str) -> float:
        return sum(self.value(sink, field, w) for w in range(self.board.workers))

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(_Exporter(self))


_SINK_COUNTERS = (("iam_proxy_audit_delivered_events", "delivered", "Events the sink acknowledged "
                   "(direct sinks: written)"),
                  ("iam_proxy_audit_retries", "retried", "Delivery attempts repeated after a failure"),
                  ("iam_proxy_audit_failed_attempts", "failed",
                   "Delivery attempts (batches) or direct writes that failed"))
_SINK_GAUGES = (("queued_events", "queued", "Events spooled and not yet acknowledged by the sink"),
                ("spool_bytes", "spool_bytes", "Spool bytes the sink has not acknowledged yet"))


class _Exporter:
    """A Prometheus collector over every worker's row of the board."""

    def __init__(self, metrics: AuditMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        m.refresh()
        for name, field, doc in _SINK_COUNTERS:
            family = CounterMetricFamily(name, doc, labels=["sink"])
            for sink in m.sinks:
                family.add_metric([sink], m.total(sink, field))
            yield family
        dropped = CounterMetricFamily("iam_proxy_audit_dropped_events", "Events that will never reach the sink, "
                                      "by reason (" + ", ".join(DROP_REASONS) + ")", labels=["sink", "reason"])
        for sink in m.sinks:
            for reason in DROP_REASONS:
                dropped.add_metric([sink, reason], m.total(sink, f"dropped:{reason}"))
        yield dropped
        for suffix, field, doc in _SINK_GAUGES:
            total = GaugeMetricFamily(f"iam_proxy_audit_{suffix}", doc + " (all workers)", labels=["sink"])
            per_worker = GaugeMetricFamily(f"iam_proxy_audit_worker_{suffix}", doc + " (one worker's spool)",
                                           labels=["sink", "worker"])
            for sink in m.sinks:
                total.add_metric([sink], m.total(sink, field))
                for worker in range(m.board.workers):
                    per_worker.add_metric([sink, str(worker)], m.value(sink, field, worker))
            yield total
            yield per_worker
        oldest = GaugeMetricFamily("iam_proxy_audit_oldest_undelivered_seconds",
                                   "Age of the oldest event the sink has not acknowledged, over all workers "
                                   "(0 when caught up)", labels=["sink"])
        now = time.time()
        for sink in m.sinks:
            times = [t for w in range(m.board.workers) if (t := m.value(sink, "oldest_time", w)) > 0]
            oldest.add_metric([sink], max(0.0, now - min(times)) if times else 0.0)
        yield oldest
        blocked = CounterMetricFamily("iam_proxy_audit_blocked_requests",
                                      "Requests refused with 503 audit_unavailable because the spool is full "
                                      "(overflow: block) or a local audit file cannot be written")
        blocked.add_metric([], m.total(None, "blocked_requests"))
        yield blocked
        failures = CounterMetricFamily("iam_proxy_audit_record_failures",
                                       "Requests whose audit event could not be built or written: refused "
                                       "(audit.on_failure: deny) or answered anyway (allow)", labels=["action"])
        for action in ("refused", "answered"):
            failures.add_metric([action], m.total(None, f"record_failures:{action}"))
        yield failures
