"""JSON lines (or CEF lines) in a local file: size/time rotation, fsync policy, hash chain.

Each line is written with one write() on an O_APPEND descriptor. A write that fails leaves the file
as it was (a short write is cut off again) and the chain where it was, so the same event can be
written later. A line that a crash left half-written is cut off when the file is opened. A rotated
file is renamed to `<path>.<UTC time>` and the chain continues into the new file.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from ...settings.audit import FileSink, StdoutSink
from ..chain import ChainState, chain_head, lines_backward
from ..privacy import PrivacyFilter
from ..render import json_bytes, render, to_bytes

log = logging.getLogger("iam_proxy.audit.file")

# Where each format keeps the decision id (see last_decision_id)
_ID_PATHS = {"native": ("decision_id",), "ecs": ("event", "id"), "ocsf": ("metadata", "uid")}
_CEF_ID = re.compile(rb"(?:^| )externalId=(\S+)")


def rotated_files(path: Path) -> list[Path]:
    """The rotated siblings of `path`, oldest first (their suffix is a sortable UTC time)."""
    return sorted(p for p in path.parent.glob(path.name + ".*") if p.name[len(path.name) + 1:][:1].isdigit())


def _cut_partial_line(path: Path) -> None:
    """A crash (power loss) can leave the last line half-written: cut it off before appending."""
    try:
        with path.open("r+b") as f:
            size = f.seek(0, 2)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            start = max(0, size - 1024 * 1024)
            f.seek(start)
            tail = f.read(size - start)
            cut = tail.rfind(b"\n")
            f.truncate(start + cut + 1 if cut >= 0 else start)
            log.warning("audit file %s: removed a half-written last line", path)
    except FileNotFoundError:
        return


class FileAuditSink:
    def __init__(self, settings: FileSink, path: Path | None = None) -> None:
        self.settings = settings
        self.path = path or settings.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.privacy = PrivacyFilter(settings.privacy)
        self.healthy = True
        _cut_partial_line(self.path)
        self.chain: ChainState | None = None
        if settings.chain.enabled:
            files = [*rotated_files(self.path), self.path]
            self.chain = ChainState(settings.chain, chain_head(files, count_events=bool(settings.chain.algorithm)))
        self._open()
        self._last_fsync = time.monotonic()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = os.fstat(self._fd).st_size
        self._opened = time.monotonic()

    def write(self, event: dict[str, Any], native: bytes | None = None) -> None:
        """Write one event (and a checkpoint when one is due); raises OSError, changing nothing.
        `native`: the event already encoded as JSON, used as it is where nothing would change it."""
        if self.privacy.active or self.settings.format != "native":
            native = None
        document = render(self.privacy.apply(event), self.settings.format) if native is None else None
        if self.chain is None:
            self._write_line(native if native is not None else to_bytes(document))
        else:
            before = self.chain.snapshot()
            try:
                self._write_line(self.chain.stamp_encoded(native) if native is not None else
                                 self.chain.stamp(document, json_bytes))
            except BaseException:
                self.chain.restore(before)
                raise
            if self.chain.checkpoint_due():
                self._write_checkpoint()
        self.healthy = True

    def _write_checkpoint(self) -> None:
        assert self.chain is not None
        before = self.chain.snapshot()
        try:
            self._write_line(self.chain.checkpoint(json_bytes))
        except OSError:
            self.chain.restore(before)  # the event is written; the checkpoint comes with a later one
            log.warning("audit file %s: could not write a checkpoint; retrying with the next event", self.path)

    def _write_line(self, line: bytes) -> None:
        if self._rotation_due():
            self._rotate()
        data = line + b"\n"
        written = os.write(self._fd, data)
        if written != len(data):  # a full disk took part of the line: cut it off again
            os.ftruncate(self._fd, self._size)
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
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

    def last_decision_id(self) -> str | None:
        """The decision id of the newest event in the file (or its newest rotated copy), if any."""
        for path in (self.path, *reversed(rotated_files(self.path))):
            for line in lines_backward(path):
                if self.settings.format == "cef":
                    found = _CEF_ID.search(line)
                    return found.group(1).decode() if found else None
                try:
                    value: Any = orjson.loads(line)
                except orjson.JSONDecodeError:
                    return None
                if "checkpoint" in value:
                    continue
                for key in _ID_PATHS[self.settings.format]:
                    value = value.get(key) if isinstance(value, dict) else None
                return value if isinstance(value, str) else None
        return None

    def close(self) -> None:
        if self.chain is not None and self.chain.checkpoint_due_at_close():
            self._write_checkpoint()
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
