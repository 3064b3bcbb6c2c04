"""`listeners.workers: 2`: the admin listener (worker 0) answers `/metrics` and `/readyz` for every
worker, against the real proxy process."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from iam_proxy.ops.workerset import merge_expositions


def _workers(pid: int) -> list[int]:
    children = (Path(f"/proc/{pid}/task/{pid}/children")).read_text().split()
    return sorted(int(c) for c in children)


def _metric(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


def test_metrics_and_readiness_cover_every_worker(proxy_factory, proxy_config, issuer):
    proxy_config["listeners"]["workers"] = 2
    proxy = proxy_factory(proxy_config)
    token = issuer.token("alice", ["finance"])
    count = 40
    for _ in range(count):  # a new connection each: the kernel spreads them over both workers
        assert httpx.get(f"{proxy.url}/api/invoices/1", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    events = proxy.wait_audit(count)
    assert len(events) == count
    per_file = [len(path.read_text().splitlines()) for path in proxy.audit_files()]
    assert len(per_file) == 2 and all(per_file), per_file  # both workers served some

    text = httpx.get(f"{proxy.admin_url}/metrics").text
    assert _metric(text, 'iam_proxy_requests_total{outcome="allowed",reason="allowed",route="api"}') == count
    assert _metric(text, 'iam_proxy_request_seconds_count{outcome="allowed"}') == count
    assert _metric(text, 'iam_proxy_audit_delivered_events_total{') == count  # from the shared board, once
    assert 'iam_proxy_worker_up{worker="1"} 1.0' in text

    ready = httpx.get(f"{proxy.admin_url}/readyz")
    assert ready.status_code == 200 and ready.json()["workers"] == {"0": {"ready": True}, "1": {"ready": True}}

    # A worker that does not answer (hung) makes the set not ready, by name, and its metrics missing.
    worker1 = _workers(proxy.process.pid)[1]
    os.kill(worker1, signal.SIGSTOP)
    try:
        started = time.monotonic()
        ready = httpx.get(f"{proxy.admin_url}/readyz", timeout=10)
        assert time.monotonic() - started < 5
        assert ready.status_code == 503
        assert ready.json()["status"] == "not ready: worker 1"
        assert ready.json()["workers"]["1"] == {"ready": False, "error": "no answer within 2.0s"}
        assert 'iam_proxy_worker_up{worker="1"} 0.0' in httpx.get(f"{proxy.admin_url}/metrics", timeout=10).text
    finally:
        os.kill(worker1, signal.SIGCONT)
    assert httpx.get(f"{proxy.admin_url}/readyz").status_code == 200


def test_merge_adds_samples_and_keeps_shared_families_once():
    one = ('# HELP x_total c\n# TYPE x_total counter\nx_total{a="1"} 2.0\n'
           '# HELP iam_proxy_audit_blocked_requests_total b\n# TYPE iam_proxy_audit_blocked_requests_total counter\n'
           'iam_proxy_audit_blocked_requests_total 5.0\n# HELP g g\n# TYPE g gauge\ng 1.0\n')
    two = one.replace("x_total{a=\"1\"} 2.0", "x_total{a=\"1\"} 3.0\nx_total{a=\"2\"} 1.0")
    merged = merge_expositions([one, two]).decode()
    assert 'x_total{a="1"} 5.0' in merged and 'x_total{a="2"} 1.0' in merged
    assert "iam_proxy_audit_blocked_requests_total 5.0" in merged
    assert "g 2.0" in merged
