"""Run a load-time step of the embedded engine in a forked child, bounded in time and memory.

Compiling a policy or evaluating it once at load is code we do not control (rego-cpp): a policy can
make it loop or allocate without end (`strings.replace_n({"": "x"}, s)` did both). The step runs in
a child forked from this process, so it costs no interpreter start; the parent watches the clock
and the child's resident memory (rego-cpp's allocator reserves hundreds of GB of address space up
front, so RLIMIT_AS cannot bound it) and kills the child when either runs out. The memory bound is
on what the step adds: a forked child starts with its parent's resident pages counted as its own,
and a proxy (or a test process) that already holds more than the bound must not fail every load.
The child reports what it is doing (`progress`), so a refusal can name the rule it was evaluating.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
from typing import Any, Callable

PAGE = os.sysconf("SC_PAGE_SIZE")


class BoundExceeded(Exception):
    def __init__(self, what: str, doing: str) -> None:
        self.what = what  # "time" or "memory"
        self.doing = doing  # the child's last progress report
        super().__init__(f"{doing}: ran out of {what}")


class ChildFailed(Exception):
    """The child died without an answer (a crash of the engine)."""


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def run_bounded(step: Callable[[Callable[[str], None]], Any], timeout: float, max_bytes: int) -> Any:
    """`step(progress)` in a forked child; its return value (pickled), or its exception re-raised here."""
    read_fd, write_fd = os.pipe()
    inherited = _rss(os.getpid())
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        status = 0
        try:
            def progress(doing: str) -> None:
                os.write(write_fd, b"P" + doing.encode()[:200].replace(b"\n", b" ") + b"\n")

            try:
                payload = pickle.dumps((True, step(progress)))
            except Exception as exc:  # noqa: BLE001 - handed to the parent, which re-raises it
                payload = pickle.dumps((False, exc))
            os.write(write_fd, b"R" + str(len(payload)).encode() + b"\n")
            view = memoryview(payload)
            while view:
                view = view[os.write(write_fd, view):]
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    try:
        return _watch(pid, read_fd, timeout, inherited + max_bytes)
    finally:
        os.close(read_fd)


def _watch(pid: int, fd: int, timeout: float, max_rss: int) -> Any:
    deadline = time.monotonic() + timeout
    buffer = b""
    doing = "starting"
    while True:
        exceeded = "time" if time.monotonic() >= deadline else "memory" if _rss(pid) > max_rss else ""
        if exceeded:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise BoundExceeded(exceeded, doing)
        ready, _, _ = select.select([fd], [], [], 0.02)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            _, status = os.waitpid(pid, 0)
            raise ChildFailed(f"{doing}: the engine died (status {status})")
        buffer += chunk
        while buffer.startswith(b"P") and b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            doing = line[1:].decode(errors="replace")
        if buffer.startswith(b"R") and b"\n" in buffer:
            header, rest = buffer.split(b"\n", 1)
            size = int(header[1:])
            while len(rest) < size:
                more = os.read(fd, size - len(rest))
                if not more:
                    break
                rest += more
            os.waitpid(pid, 0)
            ok, value = pickle.loads(rest[:size])
            if not ok:
                raise value
            return value


def run_process_bounded(argv: list[str], timeout: float, max_bytes: int) -> bytes:
    """`argv`'s standard output; BoundExceeded when it runs too long or too large, ChildFailed when it
    exits non-zero (its standard error in the message)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() >= deadline or _rss(proc.pid) > max_bytes:
                proc.kill()
                proc.wait()
                raise BoundExceeded("time" if time.monotonic() >= deadline else "memory", " ".join(argv[:2]))
            time.sleep(0.005)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise ChildFailed(err.read().decode(errors="replace").strip()[:2000])
        return out.read()
