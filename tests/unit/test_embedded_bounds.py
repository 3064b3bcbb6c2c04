"""Loading a policy into the embedded engine cannot hang the proxy or exhaust its memory."""

from __future__ import annotations

import time

import pytest

from iam_proxy.policy import embedded
from iam_proxy.policy.bounded import BoundExceeded, run_bounded
from iam_proxy.policy.embedded import EmbeddedEngine
from iam_proxy.policy.source import PolicyLoadError, PolicySource


def load(text: str) -> EmbeddedEngine:
    return EmbeddedEngine(None, ["t/p"], source=PolicySource({"t.rego": text}, {}, "r", ()))


def test_a_step_that_loops_is_killed_at_its_deadline_and_says_what_it_was_doing():
    def loop(progress):
        progress("evaluating entry point t/p")
        while True:
            pass

    started = time.monotonic()
    with pytest.raises(BoundExceeded) as caught:
        run_bounded(loop, timeout=0.5, max_bytes=1 << 30)
    assert time.monotonic() - started < 3
    assert (caught.value.what, caught.value.doing) == ("time", "evaluating entry point t/p")


def test_a_step_that_grows_is_killed_at_its_memory_bound():
    def grow(progress):
        chunks = []
        while True:
            chunks.append(bytearray(16 << 20))

    with pytest.raises(BoundExceeded) as caught:
        run_bounded(grow, timeout=30, max_bytes=256 << 20)
    assert caught.value.what == "memory"


def test_the_memory_bound_counts_what_the_step_adds_not_what_the_parent_already_holds():
    # a forked child counts its parent's resident pages as its own; a parent past the bound (a long
    # test session did it in CI) must not make every load fail
    held = bytearray(320 << 20)
    held[::4096] = b"x" * len(held[::4096])
    assert run_bounded(lambda progress: "loaded", timeout=10, max_bytes=256 << 20) == "loaded"
    del held


def test_a_step_returns_its_value_or_raises_its_exception():
    assert run_bounded(lambda progress: {"ok": [1, 2]}, timeout=5, max_bytes=1 << 30) == {"ok": [1, 2]}
    with pytest.raises(ValueError, match="bad"):
        run_bounded(lambda progress: (_ for _ in ()).throw(ValueError("bad")), timeout=5, max_bytes=1 << 30)


def test_replace_n_with_an_empty_key_is_refused_at_load_naming_the_builtin():
    # rego-cpp loops forever on it (and re-applies replacements in general): refused, in well under the bound
    started = time.monotonic()
    with pytest.raises(PolicyLoadError, match=r"t.rego:3: built-in strings.replace_n is not reliable"):
        load('package t\n\np := strings.replace_n({"": "X"}, "ab")\n')
    assert time.monotonic() - started < embedded.LOAD_TIMEOUT_SECONDS


def test_a_rule_that_exhausts_the_engine_at_load_is_refused_naming_the_rule(monkeypatch):
    monkeypatch.setattr(embedded, "LOAD_TIMEOUT_SECONDS", 3.0)
    monkeypatch.setattr(embedded, "LOAD_MEMORY_BYTES", 256 << 20)
    with pytest.raises(PolicyLoadError, match=r"rule t\.p: evaluating it once at load did not finish within"):
        load("package t\n\np := count(numbers.range(1, 200000000))\n")
