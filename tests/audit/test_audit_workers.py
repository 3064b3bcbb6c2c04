"""Two workers, one truth: each worker its own spool and file, and worker 0's /metrics adding up both."""

from __future__ import annotations

import time

from support import free_port
from test_audit_writeahead import raw_exchange

REQUESTS = 40


def _metrics_settle(proxy, name: str, labels: str, expected: float, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while (value := proxy.metric(name, labels)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def test_spool_accounting_is_per_worker_and_metrics_add_up(proxy_factory, proxy_config, tmp_path):
    proxy_config["listeners"]["workers"] = 2
    proxy_config["audit"] = {"spool": {"dir": str(tmp_path / "spool")}, "sinks": [
        {"type": "file", "path": str(tmp_path / "audit.jsonl")},
        # nobody listens: every event waits in the spool of the worker that recorded it
        {"type": "http", "name": "hook", "kind": "webhook", "url": f"http://127.0.0.1:{free_port()}/hook"},
    ]}
    proxy = proxy_factory(proxy_config)
    request = b"GET /public/w HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for _ in range(REQUESTS):  # a connection each, so the kernel spreads them over both workers
        assert raw_exchange(proxy.port, request).startswith(b"HTTP/1.1 200")
    per_file = {path.name: len(path.read_text().splitlines()) for path in proxy.audit_files()}
    assert set(per_file) == {"audit.jsonl", "audit.w1.jsonl"} and sum(per_file.values()) == REQUESTS
    assert (tmp_path / "spool" / "worker-1").is_dir()

    assert _metrics_settle(proxy, "iam_proxy_audit_queued_events", 'sink="hook"', REQUESTS) == REQUESTS
    per_worker = [proxy.metric("iam_proxy_audit_worker_queued_events", f'sink="hook",worker="{w}"') for w in "01"]
    assert per_worker == [per_file["audit.jsonl"], per_file["audit.w1.jsonl"]]
    assert proxy.metric("iam_proxy_audit_delivered_events_total", 'sink="file0"') == REQUESTS
    spool_bytes = [proxy.metric("iam_proxy_audit_worker_spool_bytes", f'sink="hook",worker="{w}"') for w in "01"]
    assert all(b > 0 for b in spool_bytes)
    assert proxy.metric("iam_proxy_audit_spool_bytes", 'sink="hook"') == sum(spool_bytes)
    assert proxy.metric("iam_proxy_audit_oldest_undelivered_seconds", 'sink="hook"') > 0
