"""The memory allocator the proxy runs on: jemalloc when the machine has it.

Under glibc's malloc the resident memory of a serving proxy grows by about 9 KB with every decision
of the embedded engine and is never given back: not by malloc_trim, nor with MALLOC_ARENA_MAX=1 or
the tcache/fastbin tunables. The same evaluations in a loop without the server do not grow, so it is
the mix of rego-cpp's many short-lived C++ allocations with the event loop's that glibc's heap does
not reuse. Under jemalloc the same load stays flat (docs/performance.md, "Memory").

`iam-proxy run` therefore re-executes itself once with jemalloc preloaded when the library is
installed (Debian: libjemalloc2, installed by `make run` and `make test`). IAM_PROXY_ALLOCATOR=system
keeps glibc's malloc.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .core.errors import ConfigError

ENV = "IAM_PROXY_ALLOCATOR"
CHOICES = ("jemalloc", "system")
JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


def requested() -> str:
    choice = os.environ.get(ENV, "jemalloc")
    if choice not in CHOICES:
        raise ConfigError(f"{ENV}: must be one of {', '.join(CHOICES)}, not {choice!r}")
    return choice


def jemalloc_path() -> str | None:
    return next((path for path in JEMALLOC_PATHS if Path(path).is_file()), None)


def in_use() -> str:
    """`jemalloc` if this process has it mapped, else `glibc`."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return "jemalloc" if "libjemalloc" in maps else "glibc"


def reexec_with_jemalloc(cli_args: list[str]) -> None:
    """Replace this process with `python -m iam_proxy <cli_args>` under jemalloc, when wanted and
    possible; returns when not (already preloaded, opted out, or not installed)."""
    if requested() == "system" or "libjemalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    path = jemalloc_path()
    if path is None:
        return
    preload = ":".join(p for p in (path, os.environ.get("LD_PRELOAD", "")) if p)
    env = {**os.environ, "LD_PRELOAD": preload}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "iam_proxy", *cli_args], env)
