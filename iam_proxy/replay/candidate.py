"""The candidate policy a replay or a shadow decides with, as a PolicyEngine:

    embedded   a policy directory, or a bundle file (.tar.gz), compiled by the embedded engine
    opa-lib    the same, compiled by OPA's evaluator in process (policy/opa_lib.py)
    opa        a local `opa run --server` started on the same directory or bundle for the run,
               or an OPA server already serving the candidate (`--opa-url`)

Either way the sources are read here, so the parts of the input the policies can read are known
(redacted.py needs them).
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from ..core.errors import ConfigError
from ..policy.bundle import BundleRefused, read_bundle
from ..policy.embedded import EmbeddedEngine
from ..policy.engine import PolicyEngine
from ..policy.input_reads import Reads
from ..policy.opa_http import OpaHttpEngine
from ..policy.opa_lib import OpaLibEngine
from ..policy.opa_tool import find as find_opa
from ..policy.source import PolicyProblem, PolicyLoadError, PolicySource, load_source
from ..settings.policy import OpaServerSettings
from .reach import reads_for

MAX_BUNDLE_BYTES = 64 * 1024 * 1024


def load_candidate(path: Path) -> PolicySource:
    """A policy directory or an OPA bundle file."""
    if path.is_dir():
        return load_source(path)
    if not path.is_file():
        raise ConfigError(f"--policies: {path}: no such directory or bundle file")
    try:
        return read_bundle(path.read_bytes(), None, MAX_BUNDLE_BYTES, str(path)).source
    except BundleRefused as exc:
        raise PolicyLoadError([PolicyProblem(str(path), 0, f"bundle refused: {exc}")]) from None


@dataclass
class Candidate:
    engine: PolicyEngine
    modules: dict[str, str]
    revision: str
    _reads: dict[str, Reads] = field(default_factory=dict)

    def reads(self, entrypoint: str) -> Reads:
        """The parts of the input the decision at `entrypoint` can read."""
        if entrypoint not in self._reads:
            self._reads[entrypoint] = reads_for(self.modules, entrypoint)
        return self._reads[entrypoint]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"--engine opa: opa exited with {proc.returncode} (does the candidate compile?)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=0.5) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise ConfigError(f"--engine opa: the local OPA was not healthy within {timeout:.0f}s")


def _start_opa(path: Path) -> tuple[subprocess.Popen, str]:
    opa = find_opa()
    if opa is None:
        raise ConfigError("--engine opa: no opa binary (set IAM_PROXY_OPA, or give --opa-url)")
    port = _free_port()
    argv = [opa, "run", "--server", "--skip-version-check", "--log-level", "error",
            "--addr", f"127.0.0.1:{port}", *(["--bundle"] if path.is_file() else []), str(path)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, url


IN_PROCESS: dict[str, type[EmbeddedEngine]] = {"embedded": EmbeddedEngine, "opa-lib": OpaLibEngine}


@asynccontextmanager
async def open_candidate(policies: Path, engine: str, entrypoints: list[str],
                         opa_url: str | None = None) -> AsyncIterator[Candidate]:
    source = load_candidate(policies)
    if engine in IN_PROCESS:
        yield Candidate(IN_PROCESS[engine](None, entrypoints, source=source), source.modules, source.revision)
        return
    proc = None
    if opa_url is None:
        proc, opa_url = _start_opa(policies)
    server = OpaHttpEngine(OpaServerSettings(url=opa_url, timeout_seconds=10, max_concurrency=8))
    try:
        yield Candidate(server, source.modules, source.revision)
    finally:
        await server.close()
        if proc is not None:
            proc.terminate()
            proc.wait(10)
