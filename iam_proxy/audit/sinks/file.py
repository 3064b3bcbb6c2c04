"""JSON lines (or CEF lines) in a local file: size/time rotation, fsync policy, hash chain.

Each line is written with one write() on an O_APPEND descriptor, so lines never interleave. A
rotated file is renamed to `<path>.<UTC time>` and the chain continues into the new file.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..chain import ChainState, last_link
from ..config import FileSink, StdoutSink
from ..privacy import PrivacyFilter
from ..render import json_bytes, render, to_bytes


def rotated_files(path: Path) -> list[Path]:
    """The rotated siblings of `path`, oldest first (their suffix is a sortable UTC time)."""
    return sorted(p for p in path.parent.glob(path.name + ".*") if p.name[len(path.name) + 1:][:1].isdigit())


class FileAuditSink:
    def __init__(self, settings: FileSink) -> None:
        self.settings = settings
        self.path = settings.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.privacy = PrivacyFilter(settings.privacy)
        self.healthy = True
        self.chain: ChainState | None = None
        if settings.chain.enabled:
            link = last_link(self.path)
            if link is None:
                previous = rotated_files(self.path)
                link = last_link(previous[-1]) if previous else None
            self.chain = ChainState(settings.chain, *link) if link else ChainState(settings.chain)
        self._open()
        self._last_fsync = time.monotonic()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = os.fstat(self._fd).st_size
        self._opened = time.monotonic()

    def write(self, event: dict[str, Any]) -> None:
        document = render(self.privacy.apply(event), self.settings.format)
        if self.chain is not None:
            self._write_line(self.chain.stamp(document, json_bytes))
            if self.chain.checkpoint_due():
                self._write_line(self.chain.checkpoint(json_bytes))
        else:
            self._write_line(to_bytes(document))
        self.healthy = True

    def _write_line(self, line: bytes) -> None:
        if self._rotation_due():
            self._rotate()
        data = line + b"\n"
        os.write(self._fd, data)
        self._size += len(data)
        policy = self.settings.fsync
        if policy == "always" or (policy == "interval" and
                                  time.monotonic() - self._last_fsync >= self.settings.fsync_interval_seconds):
            os.fsync(self._fd)
            self._last_fsync = time.monotonic()

    def _rotation_due(self) -> bool:
        if self._size == 0:
            return False
        if self.settings.rotate_bytes is not None and self._size >= self.settings.rotate_bytes:
            return True
        interval = self.settings.rotate_interval_seconds
        return interval is not None and time.monotonic() - self._opened >= interval

    def _rotate(self) -> None:
        if self.settings.fsync != "never":
            os.fsync(self._fd)
        os.close(self._fd)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        os.replace(self.path, self.path.with_name(f"{self.path.name}.{stamp}"))
        self._open()

    def close(self) -> None:
        if self.chain is not None and self.chain.signer is not None and self.chain.checkpoint_due_at_close():
            self._write_line(self.chain.checkpoint(json_bytes))
        if self.settings.fsync != "never":
            os.fsync(self._fd)
        os.close(self._fd)


class StdoutAuditSink:
    def __init__(self, settings: StdoutSink) -> None:
        self.settings = settings
        self.privacy = PrivacyFilter(settings.privacy)
        self.healthy = True

    def write(self, event: dict[str, Any]) -> None:
        sys.stdout.buffer.write(to_bytes(render(self.privacy.apply(event), self.settings.format)) + b"\n")
        sys.stdout.buffer.flush()

    def close(self) -> None:
        return None
