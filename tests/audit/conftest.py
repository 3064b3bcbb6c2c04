"""Fixtures for the audit tests: rsyslog and the HTTP collector as real processes on free ports."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from audit_peers import Collector, Rsyslog


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    server = Rsyslog(tmp_path / "rsyslog").start()
    yield server
    server.stop()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    server = Collector(tmp_path).start()
    yield server
    server.stop()
