"""SIGTERM: stop accepting, let in-flight requests finish within `listeners.shutdown_grace_seconds`,
flush the audit, exit 0 — against the real proxy process and the real echo upstream."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import httpx
import pytest

from support import audit_event


def _slow_request(proxy, token: str, request_id: str, seconds: float, out: dict) -> threading.Thread:
    def run() -> None:
        try:
            out["response"] = httpx.get(f"{proxy.url}/api/invoices/1?_sleep={seconds}", timeout=30,
                                        headers={"Authorization": f"Bearer {token}", "X-Request-Id": request_id})
        except httpx.HTTPError as exc:
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def _wait_exit(proxy, timeout: float) -> tuple[int | None, float]:
    started = time.monotonic()
    try:
        code = proxy.process.proc.wait(timeout)
    except Exception:  # noqa: BLE001 - reported as "still running" by the assertion
        code = None
    return code, time.monotonic() - started


@pytest.mark.parametrize("workers", [1, 2])
def test_in_flight_request_finishes_and_is_audited_after_sigterm(proxy_factory, proxy_config, issuer, workers):
    proxy_config["listeners"]["shutdown_grace_seconds"] = 8
    proxy_config["listeners"]["workers"] = workers
    proxy_config["routes"][0]["timeout_seconds"] = 10
    proxy = proxy_factory(proxy_config)
    token = issuer.token("alice", ["finance"])
    out: dict = {}
    thread = _slow_request(proxy, token, "slow-1", 2.5, out)
    time.sleep(0.8)  # the request is at the upstream now

    os.kill(proxy.process.pid, signal.SIGTERM)
    time.sleep(0.4)
    assert _refused(proxy.port), "the proxy listener still accepts after SIGTERM"
    if workers == 1:  # the admin listener stays up while draining and says so
        ready = httpx.get(f"{proxy.admin_url}/readyz", timeout=2)
        assert ready.status_code == 503 and ready.json()["checks"]["accepting"] is False

    code, took = _wait_exit(proxy, 15)
    thread.join(5)
    assert code == 0, proxy.process.logs()[-3000:]
    assert took < 8, f"exit took {took:.1f}s"
    assert "error" not in out, out.get("error")
    assert out["response"].status_code == 200
    event = audit_event(proxy, "slow-1", timeout=1)
    assert event["outcome"] == "allowed" and event["status"] == 200, event


def test_request_over_the_grace_is_cut_and_the_process_still_exits_in_time(proxy_factory, proxy_config, issuer):
    proxy_config["listeners"]["shutdown_grace_seconds"] = 1
    proxy_config["routes"][0]["timeout_seconds"] = 30
    proxy = proxy_factory(proxy_config)
    out: dict = {}
    thread = _slow_request(proxy, issuer.token("alice", ["finance"]), "too-slow", 20, out)
    time.sleep(0.8)

    os.kill(proxy.process.pid, signal.SIGTERM)
    code, took = _wait_exit(proxy, 15)
    thread.join(5)
    assert code == 0, proxy.process.logs()[-3000:]
    assert took < 1 + 3 + 1.5, f"exit took {took:.1f}s"  # grace + audit drain + start-up slack
    assert "response" not in out or out["response"].status_code != 200
    event = audit_event(proxy, "too-slow", timeout=1)  # cut at the deadline, and still audited as such
    assert event["response"] == "incomplete", event
