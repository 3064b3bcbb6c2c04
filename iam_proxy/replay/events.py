"""Audit events read back for replay: from audit files (one JSON event per line, with their hash
chain and checkpoint lines), rotated copies, a directory of them, or the spool's segments, optionally
cut to a time range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from ..errors import ConfigError

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, option: str, now: datetime | None = None) -> datetime:
    """An RFC 3339 time, or a duration back from now (`90m`, `24h`, `7d`)."""
    match = _DURATION.match(text)
    if match:
        return (now or datetime.now(timezone.utc)) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option}: expected an RFC 3339 time or a duration like 24h, got {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class TimeRange:
    since: datetime | None = None
    until: datetime | None = None

    def holds(self, event: dict[str, Any]) -> bool:
        if self.since is None and self.until is None:
            return True
        try:
            at = datetime.fromisoformat(str(event.get("timestamp", "")).replace("Z", "+00:00"))
        except ValueError:
            return False
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)


def event_files(paths: Iterable[Path]) -> list[Path]:
    """The files to read: each file given, and in a directory its audit files and spool segments."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix in (".seg", ".jsonl", ".json")
                                                                          or ".jsonl." in p.name))
            if not found:
                raise ConfigError(f"--events: {path} holds no audit files (*.jsonl) or spool segments (*.seg)")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"--events: {path}: no such file or directory")
    return files


def read_events(paths: Iterable[Path], window: TimeRange = TimeRange(),
                kind: str = "request") -> Iterator[dict[str, Any]]:
    """Every event of `kind` in the files ("request": one per request; "shadow": a shadow policy's
    disagreement), once: an event both the spool and the file hold is read once. Checkpoint lines
    and torn lines are skipped."""
    seen: set[str] = set()
    for path in event_files(paths):
        with path.open("rb") as stream:
            for line in stream:
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a line torn by a crash, or not an event
                if not isinstance(event, dict) or "decision_id" not in event or "checkpoint" in event:
                    continue
                if event.get("kind", "request") != kind or event["decision_id"] in seen or not window.holds(event):
                    continue
                seen.add(event["decision_id"])
                yield event
