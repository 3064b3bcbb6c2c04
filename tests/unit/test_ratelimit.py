"""GCRA in memory, the keys a limit counts by, tiers chosen by the policy, the IETF headers, and the
adaptive concurrency control law, with an injected clock (the Redis store: tests/integration)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from iam_proxy.core.identity import Identity
from iam_proxy.core.errors import ConfigError, PolicyError
from iam_proxy.policy.decision import parse_decision
from iam_proxy.ratelimit import Throttled, Traffic
from iam_proxy.ratelimit.adaptive import AdaptiveConcurrency
from iam_proxy.settings.ratelimit import AdaptiveSettings, RateLimitSettings
from iam_proxy.ratelimit.gcra import Counter, MemoryStore
from iam_proxy.settings import parse_settings

ALICE = Identity(sub="alice", method="jwt", iss="https://idp")
BOB = Identity(sub="bob", method="jwt", iss="https://idp")
APP = Identity(sub="alice", method="jwt", iss="https://idp", attributes={"client_id": "billing-app"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def traffic(raw: dict, clock: Clock | None = None) -> Traffic:
    gate = Traffic(RateLimitSettings.model_validate(raw), CollectorRegistry())
    if clock is not None:
        gate.limiter.store = MemoryStore(1000, clock)
    return gate


async def admitted(gate: Traffic, identity: Identity = ALICE, route: str = "api", address: str = "10.0.0.1",
                   decision=None) -> bool:
    try:
        await gate.admit(identity, route, address, decision, forwarding=True)
    except Throttled:
        return False
    return True


async def test_gcra_admits_the_burst_then_one_per_interval():
    clock = Clock()
    store = MemoryStore(100, clock)
    counter = Counter("k", interval_ms=1000, tolerance_ms=3000)  # 1/s, burst 3
    results = [(await store.check([counter])).allowed for _ in range(4)]
    assert results == [True, True, True, False]
    refused = await store.check([counter])
    assert refused.waits_ms[0] == pytest.approx(1000)
    clock.now += 1.0
    assert (await store.check([counter])).allowed
    assert not (await store.check([counter])).allowed


async def test_a_refusal_by_one_counter_charges_none():
    clock = Clock()
    store = MemoryStore(100, clock)
    wide, narrow = Counter("wide", 100, 1000), Counter("narrow", 1000, 1000)
    assert (await store.check([wide, narrow])).allowed
    for _ in range(3):
        assert not (await store.check([wide, narrow])).allowed
    # the refused requests did not use the wide counter's capacity: 9 of 10 are left
    assert (await store.check([wide])).remaining(wide, 0) == 8


async def test_limits_count_per_identity_client_route_and_network():
    clock = Clock()
    gate = traffic({"limits": [{"id": "user", "key": "identity", "requests": 1, "per_seconds": 60}]}, clock)
    assert await admitted(gate, ALICE)
    assert not await admitted(gate, ALICE)
    assert await admitted(gate, BOB)

    gate = traffic({"limits": [{"id": "app", "key": "client", "requests": 1, "per_seconds": 60}]}, clock)
    assert await admitted(gate, APP)
    other_user_same_app = Identity(sub="bob", method="jwt", attributes={"client_id": "billing-app"})
    assert not await admitted(gate, other_user_same_app)
    assert await admitted(gate, ALICE)  # no client id: counted by identity

    gate = traffic({"limits": [{"id": "nets", "key": "network", "requests": 1, "per_seconds": 60}],
                    "network": {"ipv4_prefix": 24}}, clock)
    assert await admitted(gate, ALICE, address="192.0.2.10")
    assert not await admitted(gate, BOB, address="192.0.2.99")  # same /24
    assert await admitted(gate, BOB, address="198.51.100.1")

    gate = traffic({"limits": [{"id": "api-only", "key": "route", "requests": 1, "per_seconds": 60,
                                "routes": ["api"]}]}, clock)
    assert await admitted(gate, ALICE, route="api")
    assert not await admitted(gate, BOB, route="api")
    assert await admitted(gate, BOB, route="public")  # the limit is not on this route


def test_client_keys_fall_back_from_attributes_to_certificate_to_identity_and_network():
    keys = traffic({}).limiter.keys
    device = Identity(sub="CN=device-7", method="x509", cert={"fingerprint": "ab12"})
    apikey = Identity(sub="ops", method="apikey", attributes={"api_key_id": "k-9"})
    anonymous = Identity(sub="anonymous", method="anonymous")
    assert keys.value("client", device, "api", "10.0.0.1") == "client:cert:ab12"
    assert keys.value("client", apikey, "api", "10.0.0.1") == "client:api_key_id:k-9"
    assert keys.value("client", ALICE, "api", "10.0.0.1") == "identity:https://idp|alice"
    assert keys.value("identity", anonymous, "api", "2001:db8::1") == "network:2001:db8::/64"


async def test_the_429_carries_retry_after_and_the_ietf_headers():
    clock = Clock()
    gate = traffic({"limits": [{"id": "user", "key": "identity", "requests": 10, "per_seconds": 60, "burst": 2}]},
                   clock)
    first = await gate.admit(ALICE, "api", "10.0.0.1", None, forwarding=True)
    assert dict(first.headers) == {"ratelimit-policy": '"user";q=10;w=60', "ratelimit": '"user";r=1;t=6'}
    await gate.admit(ALICE, "api", "10.0.0.1", None, forwarding=True)
    with pytest.raises(Throttled) as refused:
        await gate.admit(ALICE, "api", "10.0.0.1", None, forwarding=True)
    assert (refused.value.status, refused.value.reason) == (429, "rate_limited")
    assert dict(refused.value.client_headers) == {"retry-after": "6", "ratelimit-policy": '"user";q=10;w=60',
                                                  "ratelimit": '"user";r=0;t=12'}


async def test_a_policy_tier_replaces_the_limits_of_its_key_kind():
    clock = Clock()
    gate = traffic({"limits": [{"id": "user", "key": "identity", "requests": 1, "per_seconds": 60},
                               {"id": "nets", "key": "network", "requests": 100, "per_seconds": 60}],
                    "tiers": {"gold": [{"id": "gold-user", "key": "identity", "requests": 3, "per_seconds": 60}]}},
                   clock)
    gold = parse_decision({"allowed": True, "rate_limit": "gold"})
    assert [await admitted(gate, ALICE, decision=gold) for _ in range(4)] == [True, True, True, False]
    assert [limit.id for limit in gate.limiter.applicable("api", "gold")] == ["nets", "gold-user"]
    for bad in ({"allowed": True, "rate_limit": "platinum"}, {"allowed": True, "rate_limit": 5}):
        with pytest.raises(PolicyError, match="policy_malformed"):
            await gate.admit(ALICE, "api", "10.0.0.1", parse_decision(bad), forwarding=True)


def test_memory_store_forgets_idle_counters_first():
    clock = Clock()
    store = MemoryStore(100, clock)
    for i in range(100):
        asyncio.run(store.check([Counter(f"idle{i}", 1, 1)]))
    clock.now += 1
    asyncio.run(store.check([Counter("busy", 1000, 5000)]))
    asyncio.run(store.check([Counter("new", 1, 1)]))
    assert "busy" in store._tats and len(store._tats) <= 100


def adaptive(clock: Clock, **overrides) -> AdaptiveConcurrency:
    raw = {"enabled": True, "latency_target_ms": 100, "initial_limit": 8, "min_limit": 2, "max_limit": 64,
           "interval_seconds": 1, "min_samples": 4, **overrides}
    return AdaptiveConcurrency(AdaptiveSettings.model_validate(raw), clock=clock)


def run_window(limiter: AdaptiveConcurrency, clock: Clock, latency: float, failed: bool = False, n: int = 4) -> None:
    for i in range(n):
        assert limiter.try_acquire(f"c{i}")
    clock.now += 1
    for i in range(n):
        limiter.release(f"c{i}", latency, failed)


def test_the_limit_shrinks_when_latency_exceeds_the_target_and_grows_back():
    clock = Clock()
    limiter = adaptive(clock)
    run_window(limiter, clock, latency=0.4)  # p90 4x the target: halved at most
    assert limiter.limit == 4
    run_window(limiter, clock, latency=0.4)
    run_window(limiter, clock, latency=0.4)
    assert limiter.limit == 2  # never below min_limit
    run_window(limiter, clock, latency=0.05, n=2)  # under min_samples: no update
    assert limiter.limit == 2
    run_window(limiter, clock, latency=0.05)  # gradient 2 plus headroom sqrt(L)
    assert limiter.limit == pytest.approx(2 * 2 + 2 ** 0.5)


def test_a_5xx_rate_over_the_threshold_backs_off():
    clock = Clock()
    limiter = adaptive(clock, max_error_rate=0.2, backoff=0.5)
    run_window(limiter, clock, latency=0.01, failed=True)
    assert limiter.limit == 4


def test_a_noisy_client_cannot_keep_a_quiet_one_below_its_fair_share():
    limiter = adaptive(Clock(), initial_limit=8)
    noisy = [limiter.try_acquire("noisy") for _ in range(12)]
    assert noisy.count(True) == 8  # it fills the free slots, no more
    assert limiter.try_acquire("quiet")  # under its share (8 / 2) although the limit is reached
    assert limiter.try_acquire("quiet")
    assert not limiter.try_acquire("noisy")
    limiter.release("noisy", 0.01, False)
    assert not limiter.try_acquire("noisy")  # 9 in flight >= 8: the noisy one is over its share


@pytest.mark.parametrize(("section", "message"), [
    ({"limits": [{"id": "a", "key": "identity", "requests": 1, "per_seconds": 1},
                 {"id": "a", "key": "client", "requests": 1, "per_seconds": 1}]},
     r"^rate_limits\.limits\[1\]\.id: duplicate 'a'"),
    ({"limits": [{"id": "a", "key": "identity", "requests": 1, "per_seconds": 1, "routes": ["nope"]}]},
     r"^rate_limits\.limits\[0\]\.routes\[0\]: unknown route 'nope'"),
    ({"limits": [{"id": "a", "key": "team", "requests": 1, "per_seconds": 1}]},
     r"^rate_limits\.limits\[0\]\.key: "),
    ({"store": "redis"}, r"^rate_limits: redis: store 'redis' needs redis.url"),
    ({"adaptive": {"initial_limit": 1, "min_limit": 2}}, r"^rate_limits\.adaptive: initial_limit"),
])
def test_config_errors_name_the_key(section, message):
    raw = {"authenticators": {"public": {"type": "anonymous"}},
           "routes": [{"id": "api", "match": {"path": "/**"}, "upstream": "http://127.0.0.1:1",
                       "authenticators": ["public"], "policy": {"path": "iam/authz/allow"}}],
           "rate_limits": section}
    with pytest.raises(ConfigError, match=message):
        parse_settings(raw)


async def test_each_route_has_its_own_adaptive_limit():
    gate = traffic({"adaptive": {"enabled": True, "initial_limit": 2, "min_limit": 1, "key": "identity"}})
    for _ in range(4):  # two admitted on route api, then alice holds her whole share
        with contextlib.suppress(Throttled):
            await gate.admit(ALICE, "api", "10.0.0.1", None, forwarding=True)
    with pytest.raises(Throttled, match="load_shed"):
        await gate.admit(ALICE, "api", "10.0.0.1", None, forwarding=True)
    assert await admitted(gate, ALICE, route="reports")  # another upstream, another limit
    assert await admitted(gate, ALICE, route="api") is False
    assert (await gate.admit(ALICE, "api", "10.0.0.1", None, forwarding=False)).headers == []  # forward-auth


@settings(max_examples=300, deadline=None)
@given(seconds=st.floats(min_value=1, max_value=2e9), capacity=st.integers(1, 5),
       requests=st.sampled_from([1, 3, 10]), per_seconds=st.sampled_from([1, 7, 60, 3600]))
def test_a_full_burst_is_admitted_at_any_clock_reading(seconds, capacity, requests, per_seconds):
    # float milliseconds must not refuse a request that is exactly on time (at 1,000.0411 s, the
    # first request of a burst of one was refused); the counter as limiter.py builds it
    store = MemoryStore(100, lambda: seconds)
    interval = per_seconds * 1000 / requests
    counter = Counter("k", interval_ms=interval, tolerance_ms=interval * capacity)
    results = [asyncio.run(store.check([counter])).allowed for _ in range(capacity + 1)]
    assert results == [True] * capacity + [False]


def test_the_first_request_of_a_burst_of_one_at_the_clock_reading_that_refused_it():
    store = MemoryStore(100, lambda: 1_000.0411)
    counter = Counter("k", interval_ms=60_000, tolerance_ms=60_000)
    assert [asyncio.run(store.check([counter])).allowed for _ in range(2)] == [True, False]
