"""The config snippets of docs/rate-limiting.md through the real settings loader (the tier snippets
run in a real proxy in tests/integration/test_rate_limits.py)."""

from __future__ import annotations

import yaml
from snippets import snippet

from iam_proxy.settings import parse_settings

ROUTES = {"authenticators": {"public": {"type": "anonymous"}},
          "routes": [{"id": route, "match": {"path": f"/{route}/**"}, "upstream": "http://127.0.0.1:9",
                      "authenticators": ["public"]} for route in ("api", "reports")]}


def load(name: str):
    return parse_settings({**ROUTES, **yaml.safe_load(snippet(name).text)}).rate_limits


def test_limits_snippet():
    section = load("ratelimit-limits")
    assert section.store == "redis" and section.redis.max_connections == 32
    assert [(limit.id, limit.key, limit.capacity) for limit in section.limits] == [
        ("per-client", "client", 50), ("per-network", "network", 6000), ("reports", "route", 10)]
    assert section.limits[1].on_store_error == "open" and section.network.ipv4_prefix == 24


def test_adaptive_snippet():
    adaptive = load("ratelimit-adaptive").adaptive
    assert adaptive.enabled and adaptive.latency_target_ms == 250 and adaptive.key == "client"


def test_tier_snippet_loads():
    assert [limit.id for limit in load("ratelimit-tiers").tiers["gold"]] == ["gold-user"]
