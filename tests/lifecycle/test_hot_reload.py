"""Hot reload on SIGHUP and on file change, against the real proxy process under load: nothing is
lost, every request has its audit event, and a broken file keeps the old config serving."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from support import wait_until


def _write(proxy, config: dict) -> None:
    tmp = proxy.config_path.with_suffix(".new")
    tmp.write_text(yaml.safe_dump(config))
    tmp.replace(proxy.config_path)


def _reloads(proxy, result: str) -> float:
    return proxy.metric("iam_proxy_config_reloads_total", f'result="{result}"')


def test_reloads_under_load_lose_no_request_and_no_audit_event(proxy_factory, proxy_config, issuer, tmp_path):
    proxy = proxy_factory(proxy_config)
    token = issuer.token("alice", ["finance"])
    stop = threading.Event()
    sent: list[tuple[str, int]] = []

    def load() -> None:
        with proxy.client() as client:  # keep-alive: its connection stays open through the reloads
            while not stop.is_set():
                request_id = uuid.uuid4().hex
                response = client.get("/api/invoices/1?_sleep=0.05", headers={
                    "Authorization": f"Bearer {token}", "X-Request-Id": request_id})
                sent.append((request_id, response.status_code))

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(load) for _ in range(4)]
        time.sleep(1)
        assert httpx.get(f"{proxy.url}/new/x").status_code == 404

        # 1. file change: a new route
        config = {**proxy_config, "routes": [*proxy_config["routes"], {
            "id": "new", "match": {"path": "/new/**"}, "upstream": proxy_config["routes"][0]["upstream"],
            "authenticators": ["public"], "policy": {"path": "iam/authz/decision"}, "labels": {"access": "public"}}]}
        _write(proxy, config)
        wait_until(lambda: _reloads(proxy, "ok") == 1, timeout=15.0, what="ok reload 1")
        assert httpx.get(f"{proxy.url}/new/x").status_code == 200
        time.sleep(0.5)

        # 2. SIGHUP: a second audit sink (the old auditor hands over to a new one)
        second = tmp_path / "audit-second.jsonl"
        config["audit"] = {"sinks": [*config["audit"]["sinks"], {"type": "file", "path": str(second)}]}
        proxy.config_path.write_text(yaml.safe_dump(config))
        os.kill(proxy.process.pid, signal.SIGHUP)
        wait_until(lambda: _reloads(proxy, "ok") == 2, timeout=15.0, what="ok reload 2")
        time.sleep(1)
        stop.set()
        for future in futures:
            future.result()

    assert len(sent) > 40, len(sent)
    assert {status for _, status in sent} == {200}, [s for s in sent if s[1] != 200][:5]
    events = proxy.wait_audit(len(sent) + 2)
    audited = {e["request_id"] for e in events}
    assert not [rid for rid, _ in sent if rid not in audited]  # every request has its event
    assert second.exists() and second.read_text().count("\n") > 0  # the new sink receives events
    assert proxy.metric("iam_proxy_config_reload_failing") == 0
    assert proxy.process.proc.poll() is None


def test_a_broken_file_keeps_the_old_config_and_says_why(proxy_factory, proxy_config, issuer):
    proxy = proxy_factory(proxy_config)
    token = {"Authorization": f"Bearer {issuer.token('alice', ['finance'])}"}
    broken = {**proxy_config, "routes": [{**proxy_config["routes"][0], "authenticators": ["nobody"]}]}
    _write(proxy, broken)
    wait_until(lambda: _reloads(proxy, "refused") == 1, timeout=15.0, what="refused reload 1")

    assert httpx.get(f"{proxy.url}/api/invoices/1", headers=token).status_code == 200  # old config serves
    assert httpx.get(f"{proxy.url}/public/x").status_code == 200  # the route the bad file drops
    assert proxy.metric("iam_proxy_config_reload_failing") == 1
    ready = httpx.get(f"{proxy.admin_url}/readyz")
    assert ready.status_code == 200
    config = ready.json()["config"]
    assert config["result"] == "refused" and config["why"] == "file changed"
    assert config["error"].startswith("routes"), config
    assert "config reload refused (file changed)" in proxy.process.logs()

    # a listener change is refused too (it needs a restart); then a good file applies
    moved = {**proxy_config, "listeners": {**proxy_config["listeners"], "workers": 2}}
    _write(proxy, moved)
    wait_until(lambda: _reloads(proxy, "refused") == 2, timeout=15.0, what="refused reload 2")
    assert "listeners: changed" in httpx.get(f"{proxy.admin_url}/readyz").json()["config"]["error"]
    _write(proxy, {**proxy_config, "routes": proxy_config["routes"][:1]})
    wait_until(lambda: _reloads(proxy, "ok") == 1, timeout=15.0, what="ok reload 1")
    assert httpx.get(f"{proxy.url}/public/x").status_code == 404
    assert proxy.metric("iam_proxy_config_reload_failing") == 0


def test_every_worker_reloads_on_sighup_to_the_supervisor(proxy_factory, proxy_config):
    proxy_config["listeners"]["workers"] = 2
    proxy = proxy_factory(proxy_config)
    routes = [*proxy_config["routes"], {
        "id": "new", "match": {"path": "/new/**"}, "upstream": proxy_config["routes"][0]["upstream"],
        "authenticators": ["public"], "policy": {"path": "iam/authz/decision"}, "labels": {"access": "public"}}]
    config = {**proxy_config, "routes": routes}
    proxy.config_path.write_text(yaml.safe_dump(config))  # each worker also sees the change within a second
    os.kill(proxy.process.pid, signal.SIGHUP)
    wait_until(lambda: _reloads(proxy, "ok") >= 2, timeout=15.0, what="ok reload 2")  # /metrics adds up both workers
    statuses = {httpx.get(f"{proxy.url}/new/x").status_code for _ in range(20)}  # new connections: both workers
    assert statuses == {200}
    assert proxy.process.proc.poll() is None
