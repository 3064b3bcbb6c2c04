"""Rate limits against real processes: two proxies sharing one redis-server hold one limit between
them; Redis killed, each limit follows its `on_store_error`, visible in /readyz and /metrics; a tier
chosen by the policy; and adaptive shedding in front of a deliberately slow upstream."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml
from snippets import snippet

from peers.redis import RedisServer
from support import free_port, wait_until


@pytest.fixture
def redis(tmp_path: Path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def limited(config: dict, redis_url: str | None, on_store_error: str = "closed", requests: int = 5) -> dict:
    config["rate_limits"] = {
        "limits": [{"id": "per-user", "key": "identity", "requests": requests, "per_seconds": 60,
                    "on_store_error": on_store_error}],
        **({"store": "redis", "redis": {"url": redis_url, "health_interval_seconds": 0.2}} if redis_url else {}),
    }
    return config


def second(config: dict) -> dict:
    """The same config for another replica: its own ports and audit file."""
    audit_path = Path(config["audit"]["sinks"][0]["path"])
    return {**config, "listeners": {"proxy": {"host": "127.0.0.1", "port": free_port()},
                                    "admin": {"host": "127.0.0.1", "port": free_port()}},
            "audit": {"sinks": [{"type": "file", "path": str(audit_path.with_name("audit-b.jsonl"))}]}}


def bearer(issuer, sub: str, groups=("finance",)) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.token(sub, list(groups))}"}


def test_one_limit_holds_across_two_proxies_sharing_redis(proxy_factory, proxy_config, issuer, redis):
    a = proxy_factory(limited(proxy_config, redis.url), "a")
    b = proxy_factory(second(a.config), "b")
    headers = bearer(issuer, "alice")
    answers = [(a if i % 2 else b).client().get("/api/invoices/1", headers=headers) for i in range(8)]
    assert [r.status_code for r in answers] == [200] * 5 + [429] * 3
    assert answers[0].headers["ratelimit-policy"] == '"per-user";q=5;w=60'
    assert answers[0].headers["ratelimit"].startswith('"per-user";r=4;t=')
    refused = answers[-1]
    assert refused.json()["reason"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 12
    # bob has his own counter
    assert a.client().get("/api/invoices/1", headers=bearer(issuer, "bob")).status_code == 200
    events = a.wait_audit(5) + b.wait_audit(4)
    reasons = Counter(e["reason"] for e in events)
    assert reasons["rate_limited"] == 3 and all(e["status"] == 429 for e in events if e["reason"] == "rate_limited")
    assert a.metric("iam_proxy_rate_limited_total", 'limit="per-user"') \
        + b.metric("iam_proxy_rate_limited_total", 'limit="per-user"') == 3


def test_concurrent_requests_at_two_proxies_never_overshoot_the_limit(proxy_factory, proxy_config, issuer, redis):
    a = proxy_factory(limited(proxy_config, redis.url, requests=10), "a")
    b = proxy_factory(second(a.config), "b")
    headers = bearer(issuer, "carol")
    statuses: list[int] = []

    def burst(proxy) -> None:
        with proxy.client() as c:
            for _ in range(5):
                statuses.append(c.get("/api/invoices/1", headers=headers).status_code)

    threads = [threading.Thread(target=burst, args=(proxy,)) for proxy in (a, b) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(statuses) == {200: 10, 429: 20}


def test_redis_down_fails_each_limit_as_configured(proxy_factory, proxy_config, issuer, redis):
    closed = proxy_factory(limited(proxy_config, redis.url, "closed", requests=100), "closed")
    opened = proxy_factory(limited(second(closed.config), redis.url, "open", requests=100), "open")
    headers = bearer(issuer, "alice")
    assert closed.client().get("/api/invoices/1", headers=headers).status_code == 200

    redis.stop()
    refused = closed.client().get("/api/invoices/1", headers=headers)
    assert (refused.status_code, refused.json()["reason"]) == (503, "rate_limit_unavailable")
    served = opened.client().get("/api/invoices/1", headers=headers)
    assert served.status_code == 200 and "ratelimit" not in served.headers
    wait_until(lambda: httpx.get(closed.admin_url + "/readyz").status_code == 503)
    ready = httpx.get(closed.admin_url + "/readyz").json()
    assert ready["checks"]["rate_limits:redis"] is False
    assert ready["rate_limit_store"] == {"store": "redis", "up": False, "on_store_error": "closed"}
    # failing open, the replica stays ready and says the store is down
    open_ready = httpx.get(opened.admin_url + "/readyz")
    assert open_ready.status_code == 200 and open_ready.json()["rate_limit_store"]["up"] is False
    assert closed.metric("iam_proxy_rate_limit_store_up") == 0
    assert closed.metric("iam_proxy_rate_limit_store_errors_total", 'mode="closed"') >= 1
    assert opened.metric("iam_proxy_rate_limit_store_errors_total", 'mode="open"') >= 1
    events = closed.wait_audit(2)
    assert events[-1]["reason"] == "rate_limit_unavailable" and events[-1]["status"] == 503

    redis.start()  # same port: the replica recovers by itself
    wait_until(lambda: httpx.get(closed.admin_url + "/readyz").status_code == 200)
    assert closed.client().get("/api/invoices/1", headers=headers).status_code == 200


def test_a_policy_gives_a_tier_its_own_limit(proxy_factory, proxy_config, issuer, policy_dir):
    """The policy and tiers of docs/rate-limiting.md, as written."""
    (policy_dir / "tiers.rego").write_text(snippet("ratelimit-tier-policy").text)
    proxy_config["routes"][0]["policy"] = {"path": "tiers/decision"}
    proxy_config.update(yaml.safe_load(snippet("ratelimit-tiers").text))
    proxy = proxy_factory(proxy_config)
    with proxy.client() as c:
        plain = [c.get("/api/x", headers=bearer(issuer, "carol", ["staff"])).status_code for _ in range(5)]
        gold = [c.get("/api/x", headers=bearer(issuer, "dave", ["gold"])) for _ in range(5)]
    assert plain == [200, 200, 429, 429, 429]
    assert [r.status_code for r in gold] == [200] * 4 + [429]
    assert gold[0].headers["ratelimit-policy"] == '"gold-user";q=4;w=60'


def test_a_slow_upstream_sheds_the_noisy_client_and_serves_the_quiet_one(proxy_factory, proxy_config, issuer):
    proxy_config["routes"][0]["timeout_seconds"] = 10
    proxy_config["rate_limits"] = {"adaptive": {
        "enabled": True, "key": "identity", "latency_target_ms": 50, "initial_limit": 8, "min_limit": 2,
        "interval_seconds": 0.5, "min_samples": 4}}
    proxy = proxy_factory(proxy_config)
    slow = "/api/invoices/1?_sleep=0.3"  # six times the latency target, whatever the load
    noisy, quiet = bearer(issuer, "noisy"), bearer(issuer, "quiet")
    answers: dict[str, list[int]] = {"noisy": [], "quiet": []}
    stop = time.monotonic() + 6

    def hammer(name: str, headers: dict[str, str]) -> None:
        with proxy.client(timeout=20) as c:
            while time.monotonic() < stop:
                answers[name].append(c.get(slow, headers=headers).status_code)

    threads = [threading.Thread(target=hammer, args=("noisy", noisy)) for _ in range(16)]
    threads.append(threading.Thread(target=hammer, args=("quiet", quiet)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = {name: Counter(codes) for name, codes in answers.items()}
    assert statuses["quiet"][200] >= 5 and set(statuses["quiet"]) == {200}, statuses
    assert statuses["noisy"][503] > statuses["noisy"][200], statuses
    assert proxy.metric("iam_proxy_adaptive_concurrency_limit", 'route="api"') < 8
    assert proxy.metric("iam_proxy_load_shed_total", 'route="api"') == statuses["noisy"][503]
    shed = [e for e in proxy.wait_audit(sum(statuses["noisy"].values())) if e["reason"] == "load_shed"]
    assert len(shed) == statuses["noisy"][503]
