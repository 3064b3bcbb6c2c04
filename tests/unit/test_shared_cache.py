"""The workers' shared cache (core/shared_cache.py): entries cross a fork both ways, a torn entry is
never read as another's value, a clear reaches every process's copies; and its two users, verified
bearer tokens and policy decisions."""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import time

import orjson
import pytest

from iam_proxy.authn.bearer_jwt import JWTAuthenticator
from iam_proxy.authn.jwks import JWKSCache
from iam_proxy.core.identity import Identity
from iam_proxy.core.shared_cache import LOAD, WAYS, SharedTable, TieredCache
from iam_proxy.policy.cache import DecisionCache
from iam_proxy.policy.engine import EngineResult
from iam_proxy.policy.source import PolicySource
from iam_proxy.settings.authn import JWTAuthenticatorSettings
from iam_proxy.settings.identity import JWTProvider
from iam_proxy.settings.policy import DecisionCacheSettings
from support import DevIssuer

FORK = multiprocessing.get_context("fork")
NAMESPACE = hashlib.sha256(b"test").digest()
VALUE_BYTES = 400


def _table(entries: int = 64) -> SharedTable:
    return SharedTable(entries, VALUE_BYTES)


def _one_bucket() -> SharedTable:
    table = _table(int(WAYS / LOAD))
    assert table.buckets == 1
    return table


def _key(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


def _tiered(table: SharedTable, namespace: bytes = NAMESPACE, clock=time.monotonic) -> TieredCache[dict]:
    return TieredCache(table, 100, namespace, orjson.dumps, orjson.loads, clock=clock)


def _in_child(target, *args) -> int:
    process = FORK.Process(target=target, args=args)
    process.start()
    process.join(30)
    return process.exitcode


def _child_puts(table: SharedTable) -> None:
    _tiered(table).put(_key(1), {"from": "child"}, 30)


def _child_reads(table: SharedTable) -> None:
    os._exit(0 if _tiered(table).get(_key(2)) == {"from": "parent"} else 3)


def test_entries_cross_the_fork_both_ways():
    table = _table()
    assert _in_child(_child_puts, table) == 0
    assert _tiered(table).get(_key(1)) == {"from": "child"}
    _tiered(table).put(_key(2), {"from": "parent"}, 30)
    assert _in_child(_child_reads, table) == 0


def _child_clears(table: SharedTable) -> None:
    _tiered(table).clear()


def test_a_clear_in_one_process_drops_every_process_copies_local_ones_included():
    table = _table()
    mine = _tiered(table)
    mine.put(_key(1), {"v": 1}, 30)
    assert mine.get(_key(1)) == {"v": 1}  # answered from this process's own entries
    assert _in_child(_child_clears, table) == 0
    assert mine.get(_key(1)) is None
    mine.put(_key(1), {"v": 2}, 30)  # written again after the clear: it counts
    assert _tiered(table).get(_key(1)) == {"v": 2}


def _hammer(table: SharedTable, seed: int, seconds: float, results) -> None:
    """Writes and reads keys that all fall in one bucket; a value names its key, so a torn read shows."""
    import random

    rng = random.Random(seed)
    cache = TieredCache(table, 0, NAMESPACE, orjson.dumps, orjson.loads)  # no local entries: every get is shared
    wrong = hits = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        i = rng.randrange(WAYS * 2)
        table_key = cache._key(_key(i))
        if rng.random() < 0.5:
            value = orjson.dumps({"key": i, "pad": "x" * rng.randrange(VALUE_BYTES - 40)})
            table.put(table_key, value, time.monotonic() + 30, time.monotonic())
        else:
            found = table.get(table_key, time.monotonic())
            if found is not None:
                hits += 1
                wrong += orjson.loads(found[0])["key"] != i
    results.put((wrong, hits))


def test_concurrent_writers_never_make_a_reader_see_another_entry():
    table = _one_bucket()  # every write competes for the same slots
    results = FORK.Queue()
    processes = [FORK.Process(target=_hammer, args=(table, seed, 1.5, results)) for seed in range(3)]
    for process in processes:
        process.start()
    counts = [results.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(30)
    assert sum(wrong for wrong, _ in counts) == 0
    assert sum(hits for _, hits in counts) > 100  # the readers did read


def test_expiry_a_full_bucket_evicts_the_entry_closest_to_its_end_and_oversized_values_stay_local():
    now = [100.0]
    table = _one_bucket()
    clock = lambda: now[0]  # noqa: E731
    writer = _tiered(table, clock=clock)
    for i in range(WAYS):
        writer.put(_key(i), {"i": i}, 10 + i)  # key 0 ends first
    writer.put(_key(WAYS), {"i": WAYS}, 50)
    reader = _tiered(table, clock=clock)
    assert reader.get(_key(0)) is None
    assert [reader.get(_key(i)) for i in range(1, WAYS + 1)] == [{"i": i} for i in range(1, WAYS + 1)]
    now[0] = 100.0 + 10 + WAYS  # past the end of key WAYS - 1, before that of key WAYS
    assert _tiered(table, clock=clock).get(_key(WAYS - 1)) is None  # past its TTL
    big = {"pad": "x" * VALUE_BYTES}
    writer.put(_key(99), big, 30)
    assert writer.get(_key(99)) == big  # this process keeps it
    assert _tiered(table, clock=clock).get(_key(99)) is None  # too large to share


def test_a_value_json_cannot_carry_stays_with_its_worker():
    table = _table()
    writer = _tiered(table)
    writer.put(_key(1), {"ids": {1, 2}}, 30)  # a set: orjson refuses it
    assert writer.get(_key(1)) == {"ids": {1, 2}}
    assert _tiered(table).get(_key(1)) is None


def test_a_namespace_reads_only_its_own_entries():
    table = _table()
    _tiered(table).put(_key(1), {"v": 1}, 30)
    assert _tiered(table, hashlib.sha256(b"another configuration").digest()).get(_key(1)) is None


# ---------------------------------------------------------------- verified bearer tokens


def test_identity_survives_the_round_trip_through_json():
    identity = Identity(sub="alice", method="jwt", iss="https://idp", username="alice", email="a@example.org",
                        name="Alice", groups=("finance", "ops"), roles=("admin",), scopes=("read",), tenant="t1",
                        auth_time=1, acr="mfa", amr=("pwd", "otp"), expires_at=2, issued_at=1,
                        attributes={"dept": ["x"]}, provider="dev")
    assert Identity.from_dict(orjson.loads(orjson.dumps(identity.to_dict()))) == identity


def _authenticator(issuer: DevIssuer, table: SharedTable) -> JWTAuthenticator:
    provider = JWTProvider(id="dev", issuer=issuer.issuer, jwks_file=issuer.jwks_path, audiences=["iam-proxy"])
    jwks = JWKSCache(provider, session_factory=None)
    asyncio.run(jwks.refresh())
    settings = JWTAuthenticatorSettings(type="jwt", providers=["dev"])
    return JWTAuthenticator("bearer", settings, {"dev": provider}, {"dev": jwks}, shared=table)


def _child_verifies(issuer: DevIssuer, table: SharedTable, token: str) -> None:
    asyncio.run(_authenticator(issuer, table).verify(token))


def test_a_token_verified_by_one_worker_is_not_verified_again_by_another(tmp_path):
    issuer = DevIssuer(tmp_path / "issuer")
    table = _table()
    token = issuer.token("alice", ["finance"])
    assert _in_child(_child_verifies, issuer, table, token) == 0

    parent = _authenticator(issuer, table)

    async def refuse(*args, **kwargs):
        raise AssertionError("verified again")

    parent.verify_claims = refuse  # type: ignore[method-assign]
    identity = asyncio.run(parent.verify(token))
    assert (identity.sub, identity.groups, identity.provider) == ("alice", ("finance",), "dev")
    with pytest.raises(AssertionError, match="verified again"):  # an unseen token is verified
        asyncio.run(parent.verify(issuer.token("bob")))


def test_a_cached_token_whose_key_left_the_key_set_is_verified_again(tmp_path):
    issuer = DevIssuer(tmp_path / "issuer")
    table = _table()
    token = issuer.token("alice", ["finance"])
    asyncio.run(_authenticator(issuer, table).verify(token))
    issuer.add_key("k2")
    issuer.remove_key("k1")
    with pytest.raises(Exception) as refused:
        asyncio.run(_authenticator(issuer, table).verify(token))
    assert getattr(refused.value, "reason", None) == "key_unknown"


# ---------------------------------------------------------------- policy decisions


def test_decisions_are_shared_and_a_revision_swap_keeps_other_workers_entries(monkeypatch):
    from iam_proxy.core import shared_cache

    monkeypatch.setattr(shared_cache, "_tables", {})
    shared_cache.prepare("decisions", 64, 400)
    first, second = DecisionCache(DecisionCacheSettings()), DecisionCache(DecisionCacheSettings())
    result = EngineResult({"allowed": True, "reasons": ["ok"]}, "r1", "opa-lib")
    first.put("r1#a", b"key", result)
    assert second.get("r1#a", b"key") == result
    second.get("r2#b", b"other")  # this worker swapped to a new revision
    assert first.get("r1#a", b"key") == result  # the other, not yet swapped, still has its entry
    first.clear()  # a security event, in any worker
    assert second.get("r1#a", b"key") is None


def test_the_fingerprint_names_the_content_not_the_revision_string():
    one = PolicySource({"p.rego": "package p\n\nx := 1\n"}, {"d": {"a": 1}}, "same", ())
    assert PolicySource(dict(one.modules), {"d": {"a": 1}}, "same", ()).fingerprint == one.fingerprint
    assert PolicySource(dict(one.modules), {"d": {"a": 2}}, "same", ()).fingerprint != one.fingerprint
    assert PolicySource({"p.rego": "package p\n\nx := 2\n"}, {"d": {"a": 1}}, "same", ()).fingerprint \
        != one.fingerprint
