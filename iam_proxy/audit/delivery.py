"""One delivery task per spooled sink: read a batch after the cursor, render it, send it, and move
the cursor only when the sink acknowledged it. Failures retry the same batch forever with
exponential backoff and jitter (nothing is dropped here; only the spool's overflow policy drops).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from datetime import datetime
from typing import Any

import orjson

from ..settings.audit import RetrySettings
from .metrics import AuditMetrics
from .privacy import PrivacyFilter
from .sinks import DeliveredSink
from .spool import SpoolReader

log = logging.getLogger("iam_proxy.audit.delivery")


_JITTER = random.Random()


def backoff_seconds(retry: RetrySettings, attempt: int) -> float:
    """initial * 2^attempt, capped, then spread by +-jitter so that proxies do not retry in step."""
    base = min(retry.max_backoff_seconds, retry.initial_backoff_seconds * (2 ** min(attempt, 30)))
    return max(0.0, base * (1 + retry.jitter * (2 * _JITTER.random() - 1)))


def _root_causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "os_error", None) \
            or getattr(exc, "certificate_error", None)
    return chain


def describe_failure(exc: BaseException, timeout_seconds: float) -> str:
    """Why a delivery failed, for the log: the TLS cause when there is one, in plain words.
    Messages here never carry credentials (they come from sockets, TLS and our CollectorRefused)."""
    chain = _root_causes(exc)
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS: the collector's certificate is not trusted: {cause.verify_message} " \
                   f"(check tls.ca_file and tls.server_name)"
    for cause in chain:
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {cause.reason or cause}"
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within timeout_seconds ({timeout_seconds:g}s)"
    for cause in chain:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is the collector running and listening?)"
        if isinstance(cause, (ConnectionResetError, BrokenPipeError)):
            return f"the collector closed the connection ({cause.__class__.__name__})"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the collector's host name ({cause.strerror})"
    return f"{exc.__class__.__name__}: {str(exc) or '-'}"[:300]


class DeliveryWorker:
    def __init__(self, name: str, sink: DeliveredSink, reader: SpoolReader, privacy: PrivacyFilter, *,
                 batch_max_events: int, timeout_seconds: float, retry: RetrySettings,
                 metrics: AuditMetrics) -> None:
        self.name, self.sink, self.reader, self.privacy = name, sink, reader, privacy
        self.batch_max_events = batch_max_events
        self.timeout_seconds = timeout_seconds
        self.retry = retry
        self.metrics = metrics
        self._delivered = metrics.cell(name, "delivered")
        self._failed = metrics.cell(name, "failed")
        self._retried = metrics.cell(name, "retried")
        self._drops_at_read = 0

    def _next_batch(self) -> tuple[list[bytes], Any]:
        self._drops_at_read = self.reader.drops
        return self.reader.read_batch(self.batch_max_events)

    async def run(self) -> None:
        while True:
            records, cursor = self._next_batch()
            if not records:
                self.reader.wakeup.clear()
                records, cursor = self._next_batch()  # an append may have landed before clear()
                if not records:
                    await self.reader.wakeup.wait()
                    continue
            # Decoding, privacy rules and rendering are CPU work (ECS ~100 µs an event): a thread
            # keeps a large batch from holding the event loop that serves requests.
            count, oldest, payload = await asyncio.to_thread(self._prepare, records)
            if oldest is not None:
                self.reader.oldest_time = oldest
            if count and not await self._deliver(payload, count):
                continue
            self.reader.commit(cursor, len(records))
            if count:
                self._delivered.inc(count)

    def _prepare(self, records: list[bytes]) -> tuple[int, float | None, Any]:
        events = self._decode(records)
        if not events:
            return 0, None, None
        stamp = events[0].get("timestamp")
        oldest = datetime.fromisoformat(stamp).timestamp() if stamp else None
        return len(events), oldest, self.sink.encode([self.privacy.apply(event) for event in events])

    def _decode(self, records: list[bytes]) -> list[dict[str, Any]]:
        events = []
        for record in records:
            try:
                events.append(orjson.loads(record))
            except orjson.JSONDecodeError:
                # Only disk corruption gets here; sending garbage would not help the SIEM either.
                self.metrics.count(self.name, "dropped:corrupt")
                log.error("audit sink %s: skipping an unreadable spool record (%d bytes)", self.name, len(record))
        return events

    async def _deliver(self, payload: Any, count: int) -> bool:
        """True once the sink took the batch; False if overflow=drop_oldest dropped (part of) it
        meanwhile: those events are counted as dropped, the rest is read again from the new cursor."""
        attempt = 0
        while True:
            if self.reader.drops != self._drops_at_read:
                return False
            try:
                await asyncio.wait_for(self.sink.send(payload), self.timeout_seconds)
                if attempt:
                    log.warning("audit sink %s (%s): delivered after %d retries", self.name, self.sink.target,
                                attempt)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is retried
                delay = backoff_seconds(self.retry, attempt)
                self._failed.inc()
                log.warning("audit sink %s (%s): delivering %d events failed: %s; retry %d in %.2fs",
                            self.name, self.sink.target, count, describe_failure(exc, self.timeout_seconds),
                            attempt + 1, delay)
                await asyncio.sleep(delay)
                attempt += 1
                self._retried.inc()
