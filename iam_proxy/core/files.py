"""Watched files: certificates, CA bundles, CRLs and key files re-read when they change on disk."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

Stamp = tuple[Any, ...]


def file_stamp(paths: list[Path]) -> Stamp:
    """Identity, size and mtime of each file (None if missing): any change means a reload."""
    out: list[Any] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class WatchedFiles:
    """Files looked at no more often than every `interval_seconds` (0: never after the first load).

    `changed()` gives the new stamp when the files differ from the last one `accept`ed; the owner
    reloads and accepts it, or keeps what it has (a half-written rotation) and sees it again later."""

    def __init__(self, paths: list[Path], interval_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = paths
        self.interval = interval_seconds
        self._clock = clock
        self._checked = clock()
        self.stamp: Stamp | None = None

    def current(self) -> Stamp:
        return file_stamp(self.paths)

    def accept(self, stamp: Stamp | None) -> None:
        self.stamp = stamp

    def changed(self) -> Stamp | None:
        if self.interval <= 0:
            return None
        now = self._clock()
        if now - self._checked < self.interval:
            return None
        self._checked = now
        stamp = file_stamp(self.paths)
        return None if stamp == self.stamp else stamp
