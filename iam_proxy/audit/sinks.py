"""Audit sinks for the backbone: JSON lines to a file (O_APPEND, optional fsync) and to stdout.

Each event is one line, written with a single write() so concurrent writers never interleave.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Protocol

import orjson

from ..settings import AuditSinkSettings, FileSink, StdoutSink

log = logging.getLogger("iam_proxy.audit")


class AuditSink(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def encode_line(event: dict[str, Any]) -> bytes:
    # orjson escapes control characters (and U+2028 stays inside a JSON string), so a hostile
    # username can never start a second record.
    return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)


class FileAuditSink:
    def __init__(self, path: Path, fsync: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._fsync = fsync

    def emit(self, event: dict[str, Any]) -> None:
        os.write(self._fd, encode_line(event))
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class StdoutAuditSink:
    def emit(self, event: dict[str, Any]) -> None:
        sys.stdout.buffer.write(encode_line(event))
        sys.stdout.buffer.flush()

    def close(self) -> None:
        return None


def build_sink(settings: AuditSinkSettings) -> AuditSink:
    if isinstance(settings, FileSink):
        return FileAuditSink(settings.path, settings.fsync)
    if isinstance(settings, StdoutSink):
        return StdoutAuditSink()
    raise TypeError(f"unknown sink {settings!r}")


class Auditor:
    """Fans one event out to every sink; a failing sink is logged, never fails the request."""

    def __init__(self, sinks: list[AuditSink], metrics: Any = None) -> None:
        self.sinks = sinks
        self._metrics = metrics

    def emit(self, event: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception:  # noqa: BLE001
                log.exception("audit sink %s failed", type(sink).__name__)
                if self._metrics is not None:
                    self._metrics.audit_failures.labels(sink=type(sink).__name__).inc()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
