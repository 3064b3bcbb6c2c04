"""CPU time and peak memory of a process tree, read from /proc (the proxy's processes only)."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """`root` and every process below it (nginx workers, iam-proxy worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """user + system time of the given processes, including children they already reaped."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the ")" : state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
        total += sum(int(f) for f in fields[11:15])
    return total / CLOCK_TICKS


def peak_rss_mb(pids: list[int]) -> tuple[float, float]:
    """(sum over processes, largest single process) of VmHWM, the kernel's peak resident size."""
    sizes = []
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    sizes.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return (sum(sizes), max(sizes)) if sizes else (0.0, 0.0)
