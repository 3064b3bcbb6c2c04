"""Fixtures of the differential suite: the real OPA binary and a child process running the embedded engine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from support import PYTHON, REPO

WORKER = Path(__file__).with_name("embedded_worker.py")


def opa_binary() -> str:
    """The OPA that scripts/install-peers.sh builds (or IAM_PROXY_OPA); a missing OPA fails the suite."""
    from iam_proxy.policy.testing import find_opa

    opa = find_opa()
    if opa is None:
        pytest.fail("no opa binary: run scripts/install-peers.sh (or set IAM_PROXY_OPA)")
    return opa


class EmbeddedWorker:
    """The embedded engine in a child process, restarted after a crash."""

    def __init__(self, log_path: Path) -> None:
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        log = open(self._log_path, "ab")
        return subprocess.Popen([PYTHON, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})

    def evaluate(self, directory: Path, path: str, inputs: list[Any]) -> dict[str, Any]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(orjson.dumps({"dir": str(directory), "path": path, "inputs": inputs}) + b"\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait(10)
            self._proc = None
            return {"crashed": code}
        return orjson.loads(line)

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(10)


@pytest.fixture(scope="session")
def opa() -> str:
    return opa_binary()


@pytest.fixture(scope="session")
def embedded_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedWorker]:
    worker = EmbeddedWorker(tmp_path_factory.mktemp("embedded") / "worker.log")
    yield worker
    worker.close()
