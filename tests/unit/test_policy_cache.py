"""DecisionCache: key without volatile fields, bounds (entries, TTL), revision invalidation; and the
detection of policies that read time or randomness (never cached)."""

from __future__ import annotations

import copy

from iam_proxy.policy.cache import DecisionCache, uncacheable_reasons
from iam_proxy.policy.input_reads import analyse
from iam_proxy.policy.engine import EngineResult
from iam_proxy.settings import DecisionCacheSettings


def _input(request_id: str = "r1", time: str = "2026-01-01T00:00:00.000Z", **headers: str) -> dict:
    return {"attributes": {"request": {"time": time, "http": {
        "id": request_id, "method": "GET", "path": "/api/x", "headers": {"authorization": "Bearer t", **headers}}}},
        "identity": {"sub": "alice", "groups": ["finance"]}, "parsed_path": ["api", "x"]}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_key_ignores_request_id_time_and_tracing_headers_only():
    cache = DecisionCache(DecisionCacheSettings())
    base = cache.key("rev", "iam/authz/decision", _input())
    assert cache.key("rev", "iam/authz/decision", _input("r2", "2026-02-02T00:00:00.000Z",
                                                         traceparent="00-abc-01")) == base
    other_user = _input()
    other_user["identity"]["sub"] = "bob"
    assert cache.key("rev", "iam/authz/decision", other_user) != base
    assert cache.key("rev", "iam/authz/decision", _input(**{"x-tenant": "a"})) != base
    assert cache.key("rev2", "iam/authz/decision", _input()) != base
    assert cache.key("rev", "other/path", _input()) != base


def test_key_does_not_modify_the_input():
    doc = _input()
    before = copy.deepcopy(doc)
    DecisionCache(DecisionCacheSettings()).key("rev", "p", doc)
    assert doc == before


def test_ttl_and_lru_bounds():
    clock = Clock()
    cache = DecisionCache(DecisionCacheSettings(max_entries=2, ttl_seconds=5), clock=clock)
    results = {name: EngineResult(value=True, revision="rev", engine="embedded") for name in "abc"}
    for name in "ab":
        cache.put("rev", name.encode(), results[name])
    assert cache.get("rev", b"a") is results["a"]  # a is now most recently used
    cache.put("rev", b"c", results["c"])
    assert len(cache) == 2
    assert cache.get("rev", b"b") is None  # evicted
    assert cache.get("rev", b"a") is results["a"]
    clock.now += 5
    assert cache.get("rev", b"a") is None  # expired


def test_a_new_revision_drops_everything():
    cache = DecisionCache(DecisionCacheSettings())
    cache.put("rev1", b"k", EngineResult(value=True, revision="rev1", engine="embedded"))
    assert cache.get("rev1", b"k") is not None
    assert cache.get("rev2", b"k") is None
    assert len(cache) == 0


def test_policies_reading_time_randomness_or_fields_the_key_leaves_out_are_not_cached():
    modules = {
        "a.rego": 'package a\n\n# time.now_ns() in a comment is fine\nx := "time.now_ns()"\n'
                  "late if time.now_ns() > 5\n",
        "b.rego": "package b\n\nday := input.attributes.request.time\n",
        "c.rego": "package c\n\nok if io.jwt.decode_verify(input.t, {})[0]\n",
        "c_test.rego": "package c_test\n\nt := time.now_ns()\n",
        "d.rego": "package d\n\nallow if input.identity.sub == \"alice\"\n",
        "e.rego": 'package e\n\nimport input.attributes.request.http as req\n\nt := $"{req.headers}"\n',
        "f.rego": 'package f\n\nmsg := $"{uuid.rfc4122("x")}"\n',
    }
    reasons = lambda *names: uncacheable_reasons(analyse({n: modules[n] for n in names}),  # noqa: E731
                                                 frozenset({"traceparent"}))
    assert reasons("a.rego", "c_test.rego") == ["a.rego:5: time.now_ns"]
    assert reasons("b.rego") == ["reads input.attributes.request.time, which the cache key leaves out"]
    assert reasons("c.rego") == ["c.rego:3: io.jwt.decode_verify"]
    assert reasons("d.rego") == []
    # through an import alias and a template string: all headers are read, the tracing one too
    assert reasons("e.rego") == ["reads input.attributes.request.http.headers.traceparent, which the cache key "
                                 "leaves out"]
    assert reasons("f.rego") == ["f.rego:3: uuid.rfc4122"]
    whole = uncacheable_reasons(analyse({"g.rego": "package g\n\nallow if walk(input, [p, v])\n"}), frozenset())
    assert whole == ["the policies read the whole input (a bare or dynamic `input`)"]
