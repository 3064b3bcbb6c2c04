"""Fixtures shared by the whole suite. Real processes are started on free loopback ports."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from support import DevIssuer, OpaServer, ProxyProcess, REPO, base_config, copy_policies, start_upstream


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def upstream(session_tmp: Path) -> Iterator[str]:
    """The example echo upstream as a real process; yields its base URL."""
    proc, url = start_upstream(session_tmp)
    yield url
    proc.stop()


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    return DevIssuer(tmp_path / "issuer")


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped policies, so a test may edit it."""
    target = tmp_path / "policies"
    return copy_policies(target)


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def start(config: dict, name: str = "proxy", wait: bool = True) -> ProxyProcess:
        proxy = ProxyProcess(config, tmp_path, name)
        started.append(proxy)
        return proxy.wait_ready() if wait else proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy_config(upstream: str, issuer: DevIssuer, policy_dir: Path, tmp_path: Path) -> dict:
    return base_config(upstream, issuer.jwks_path, tmp_path / "audit.jsonl", policy_dir)


@pytest.fixture
def proxy(proxy_factory, proxy_config) -> ProxyProcess:
    """The real proxy process with the shipped policies in front of the echo upstream."""
    return proxy_factory(proxy_config)


@pytest.fixture(scope="session")
def opa_server(session_tmp: Path) -> Iterator[OpaServer]:
    """The real OPA server (`opa run --server`) with the shipped policies/, shared by the session."""
    server = OpaServer([REPO / "policies"], session_tmp, "opa-session")
    yield server
    server.stop()


@pytest.fixture
def opa_factory(tmp_path: Path) -> Iterator[Callable[..., OpaServer]]:
    """Private OPA servers for one test (to kill and restart, or to load other policies)."""
    started: list[OpaServer] = []

    def start(paths: list[Path], extra: list[str] | None = None) -> OpaServer:
        server = OpaServer(paths, tmp_path, f"opa{len(started)}", extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def slapd(session_tmp: Path):
    """A real OpenLDAP slapd (LDAPS and StartTLS) with the test directory of tests/peers/slapd.py."""
    from peers.slapd import start_slapd

    server = start_slapd(session_tmp / "slapd")
    yield server
    server.stop()
