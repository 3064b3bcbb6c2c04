"""The durable spool: events are appended here before any network sink sees them, and a sink's
cursor moves past an event only once the sink acknowledged it (at-least-once delivery).

On disk (`spool.dir`):

    0000000000000001.seg ...   segments: one JSON event per line, appended with a single write()
    cursor-<sink>              "<segment> <offset>" of the first event the sink has not acknowledged

One spool serves every delivered sink: an event is written once, each sink reads it at its own
pace, and a segment is deleted when every cursor has passed it. A SIGKILL loses nothing that
write() returned for (the page cache outlives the process); `fsync` decides what survives a power
loss. The spool is bounded by `max_bytes`; see `SpoolSettings.overflow` for what happens then.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import NamedTuple

from ..settings.audit import SpoolSettings
from .metrics import AuditMetrics

log = logging.getLogger("iam_proxy.audit.spool")

READ_CHUNK = 1024 * 1024


class Cursor(NamedTuple):
    segment: int
    offset: int


def _segment_name(seq: int) -> str:
    return f"{seq:016d}.seg"


class SpoolReader:
    """One sink's position in the spool."""

    def __init__(self, spool: "Spool", name: str, cursor: Cursor) -> None:
        self.spool = spool
        self.name = name
        self.cursor = cursor
        self.pending = 0  # events after the cursor
        self.oldest_time: float | None = None  # event time of the oldest unacknowledged event
        self.drops = 0  # bumped when overflow=drop_oldest moves the cursor: batches in flight are void
        self.wakeup = asyncio.Event()
        self._fd: int | None = None
        self._fd_segment = -1

    def _segment_fd(self, segment: int) -> int | None:
        if self._fd_segment != segment:
            self._close_fd()
            try:
                self._fd = os.open(self.spool.segment_path(segment), os.O_RDONLY)
            except FileNotFoundError:
                return None
            self._fd_segment = segment
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._fd_segment = None, -1

    def read_batch(self, max_events: int, at: Cursor | None = None) -> tuple[list[bytes], Cursor]:
        """Up to `max_events` records after the cursor (or `at`), and the cursor just past them."""
        segment, offset = at or self.cursor
        records: list[bytes] = []
        while len(records) < max_events:
            existing = self.spool.existing_segment_at_or_after(segment)
            if existing is None:
                break
            if existing != segment:  # ours was deleted by drop_oldest
                segment, offset = existing, 0
            fd = self._segment_fd(segment)
            data = os.pread(fd, READ_CHUNK, offset) if fd is not None else b""
            end = data.rfind(b"\n")
            if end < 0:
                if segment >= self.spool.active:
                    break  # caught up
                segment, offset = segment + 1, 0
                continue
            lines = data[:end].split(b"\n")
            take = lines[: max_events - len(records)]
            records.extend(take)
            offset += sum(len(line) + 1 for line in take)
            if len(take) < len(lines):
                break
        return records, Cursor(segment, offset)

    def commit(self, cursor: Cursor, count: int, save: bool = True) -> None:
        """The sink acknowledged `count` events, up to `cursor`. `save=False` leaves the cursor file
        behind (a local file finds its own position again at restart, see filefeed.py)."""
        if cursor > self.cursor:  # a drop_oldest may already have moved us further
            self.cursor = cursor
            self.pending = max(0, self.pending - count)
            if save:
                self.spool.save_cursor(self)
        if self.pending == 0:
            self.oldest_time = None
        self.spool.collect()

    def unacknowledged_bytes(self) -> int:
        segment, offset = self.cursor
        if segment not in self.spool.sizes:  # deleted under us by drop_oldest: nothing of it is left
            offset = 0
        return max(0, sum(size for seq, size in self.spool.sizes.items() if seq >= segment) - offset)

    def close(self) -> None:
        self._close_fd()


class Spool:
    def __init__(self, settings: SpoolSettings, sink_names: list[str], metrics: AuditMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.dir = settings.dir
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.sizes: dict[int, int] = {}
        for path in sorted(self.dir.glob("*.seg")):
            self.sizes[int(path.stem)] = path.stat().st_size
        if not self.sizes:
            self.sizes[1] = 0
            self.segment_path(1).touch(mode=0o600)
        self.active = max(self.sizes)
        self._repair_tail()
        self.total_bytes = sum(self.sizes.values())
        self.full = False
        self._fd = os.open(self.segment_path(self.active), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._last_fsync = time.monotonic()
        self.readers = {name: SpoolReader(self, name, self._load_cursor(name)) for name in sink_names}
        for path in self.dir.glob("cursor-*"):
            if path.name.removeprefix("cursor-") not in self.readers:
                path.unlink()  # a sink that is no longer configured must not pin segments forever
        for reader in self.readers.values():
            reader.pending = self._count_after(reader.cursor)
            if reader.pending:
                reader.oldest_time = time.time()  # refined when its first batch is read
        self.collect()

    # ------------------------------------------------------------------ files

    def segment_path(self, seq: int) -> Path:
        return self.dir / _segment_name(seq)

    def _repair_tail(self) -> None:
        """Cut a record that a crash left half-written (no final newline) off the last segment."""
        path = self.segment_path(self.active)
        size = self.sizes[self.active]
        if size == 0:
            return
        with path.open("r+b") as f:
            f.seek(max(0, size - READ_CHUNK))
            tail = f.read()
            if tail.endswith(b"\n"):
                return
            cut = tail.rfind(b"\n")
            new_size = size - len(tail) + cut + 1 if cut >= 0 else max(0, size - len(tail))
            log.warning("spool: removing a half-written record at the end of %s", path.name)
            f.truncate(new_size)
            self.sizes[self.active] = new_size

    def _load_cursor(self, name: str) -> Cursor:
        path = self.dir / f"cursor-{name}"
        try:
            seg_text, off_text = path.read_text().split()
            cursor = Cursor(int(seg_text), int(off_text))
        except FileNotFoundError:
            # A new sink starts with the events that arrive from now on.
            cursor = Cursor(self.active, self.sizes[self.active])
            self._write_cursor(name, cursor)
            return cursor
        except ValueError:
            log.error("spool: cursor of sink %s is unreadable; resending from the oldest event", name)
            cursor = Cursor(min(self.sizes), 0)
        first = min(self.sizes)
        if cursor.segment < first:
            cursor = Cursor(first, 0)
        if cursor.segment in self.sizes and cursor.offset > self.sizes[cursor.segment]:
            cursor = Cursor(cursor.segment, self.sizes[cursor.segment])
        return cursor

    def _write_cursor(self, name: str, cursor: Cursor) -> None:
        path = self.dir / f"cursor-{name}"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{cursor.segment} {cursor.offset}\n")
        os.replace(tmp, path)

    def save_cursor(self, reader: SpoolReader) -> None:
        self._write_cursor(reader.name, reader.cursor)

    def _count_after(self, cursor: Cursor) -> int:
        count = 0
        for seq in sorted(self.sizes):
            if seq < cursor.segment:
                continue
            with self.segment_path(seq).open("rb") as f:
                if seq == cursor.segment:
                    f.seek(cursor.offset)
                while chunk := f.read(READ_CHUNK):
                    count += chunk.count(b"\n")
        return count

    def existing_segment_at_or_after(self, seq: int) -> int | None:
        if seq in self.sizes:
            return seq
        later = [s for s in self.sizes if s >= seq]
        return min(later) if later else None

    # ------------------------------------------------------------------ writing

    def has_room(self) -> bool:
        """Room for new requests. The last eighth of the spool is kept for the events of requests
        already in flight (and of the 503s that refuse new ones), so that an admitted request's
        event is never the one that does not fit."""
        return not self.full and self.total_bytes < self.settings.max_bytes - self.settings.max_bytes // 8

    def append(self, record: bytes) -> Cursor | None:
        """Append one record (ending in a newline); where it starts, or None when the spool is full
        and the policy is `block`. Raises OSError when the disk refuses the write."""
        if self.total_bytes + len(record) > self.settings.max_bytes:
            if self.settings.overflow == "block":
                self.full = True  # until a sink's progress frees a segment
                return None
            self._drop_oldest(len(record))
        start = Cursor(self.active, self.sizes[self.active])
        written = os.write(self._fd, record)
        if written != len(record):  # a full disk can take part of a record: cut it, refuse the event
            os.ftruncate(self._fd, start.offset)
            raise OSError(f"spool: short write ({written} of {len(record)} bytes)")
        self.sizes[self.active] += len(record)
        self.total_bytes += len(record)
        self._maybe_fsync()
        now = time.time()
        for reader in self.readers.values():
            reader.pending += 1
            if reader.oldest_time is None:
                reader.oldest_time = now
            reader.wakeup.set()
        if self.sizes[self.active] >= self.settings.segment_bytes:
            self._roll()
        return start

    def _maybe_fsync(self, force: bool = False) -> None:
        policy = self.settings.fsync
        if policy == "always" or (policy == "interval" and (
                force or time.monotonic() - self._last_fsync >= self.settings.fsync_interval_seconds)):
            os.fsync(self._fd)
            self._last_fsync = time.monotonic()

    def _roll(self) -> None:
        self._maybe_fsync(force=True)
        os.close(self._fd)
        self.active += 1
        self.sizes[self.active] = 0
        self._fd = os.open(self.segment_path(self.active), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _drop_oldest(self, needed: int) -> None:
        while self.total_bytes + needed > self.settings.max_bytes:
            if len(self.sizes) == 1:
                self._roll()
            oldest = min(self.sizes)
            for reader in self.readers.values():
                if reader.cursor.segment > oldest:
                    continue
                lost = self._count_after_in(oldest, reader.cursor.offset if reader.cursor.segment == oldest else 0)
                reader.cursor = Cursor(oldest + 1, 0)
                reader.drops += 1
                reader.pending = max(0, reader.pending - lost)
                self.save_cursor(reader)
                if lost:
                    self.metrics.count(reader.name, "dropped:drop_oldest", lost)
                    log.warning("audit spool full: dropped the %d oldest undelivered events of sink %s "
                                "(overflow: drop_oldest)", lost, reader.name)
            self._delete(oldest)

    def _count_after_in(self, seq: int, offset: int) -> int:
        with self.segment_path(seq).open("rb") as f:
            f.seek(offset)
            return f.read().count(b"\n")

    def _delete(self, seq: int) -> None:
        self.full = False
        self.total_bytes -= self.sizes.pop(seq)
        self.segment_path(seq).unlink(missing_ok=True)

    def collect(self) -> None:
        """Delete the segments every sink has acknowledged completely."""
        if not self.readers:
            return
        low = min(reader.cursor.segment for reader in self.readers.values())
        for seq in [s for s in self.sizes if s < low and s != self.active]:
            self._delete(seq)

    def close(self) -> None:
        self._maybe_fsync(force=self.settings.fsync != "never")
        os.close(self._fd)
        for reader in self.readers.values():
            reader.close()
