"""`listeners.workers`: several proxy processes on one port, supervised as one service."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from iam_proxy.core.errors import ConfigError
from iam_proxy.settings import parse_settings
from support import base_config


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def test_workers_need_a_fixed_port(tmp_path):
    config = base_config("http://127.0.0.1:1", tmp_path / "jwks.json", tmp_path / "audit.jsonl", tmp_path)
    config["listeners"]["workers"] = 2
    config["listeners"]["proxy"]["port"] = 0
    with pytest.raises(ConfigError, match=r"^listeners: workers > 1 needs a fixed"):
        parse_settings(config)


def test_two_workers_serve_one_port_and_die_together(proxy_factory, proxy_config, issuer):
    proxy_config["listeners"]["workers"] = 2
    proxy = proxy_factory(proxy_config)
    workers = _children(proxy.process.pid)
    assert len(workers) == 2

    token = issuer.token("alice", ["finance"])
    with proxy.client() as c:
        statuses = {c.get("/api/invoices/1", headers={"Authorization": f"Bearer {token}"}).status_code for _ in range(20)}
        assert c.get(proxy.admin_url + "/readyz").status_code == 200
    assert statuses == {200}
    assert len(proxy.audit_events()) == 20  # one line per request, whichever worker served it

    # A worker that dies takes the service down (non-zero), rather than running on half capacity.
    os.kill(workers[1], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while proxy.process.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proxy.process.proc.returncode == 1
    assert not any(Path(f"/proc/{w}").exists() for w in workers)  # the supervisor reaped them


def _cache_counts(metrics: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("iam_proxy_decision_cache_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = counts.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_workers_share_one_decision_cache(proxy_factory, proxy_config, issuer):
    proxy_config["listeners"]["workers"] = 2
    proxy = proxy_factory(proxy_config)
    token = issuer.token("alice", ["finance"])
    for _ in range(20):  # a new connection each: the kernel spreads them over both workers
        with proxy.client() as c:
            assert c.get("/api/invoices/1", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with proxy.client() as c:
        counts = _cache_counts(c.get(proxy.admin_url + "/metrics").text)
    # one evaluation for the service; a cache per worker would have evaluated once in each
    assert counts == {"hit": 19.0, "miss": 1.0}
