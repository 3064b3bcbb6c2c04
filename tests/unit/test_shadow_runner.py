"""The shadow runner's request side: sampling, a bounded queue that drops (and counts) rather than
waits, and an unanswered candidate counted as an error, never as a disagreement."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from iam_proxy.authn.identity import Identity
from iam_proxy.replay.replay import Verdict
from iam_proxy.replay.shadow import ShadowRunner
from iam_proxy.settings import Route

ROUTE = Route.model_validate({"id": "api", "upstream": "http://127.0.0.1:1", "authenticators": ["b"],
                              "policy": {"shadow": {"dir": "policies", "sample_rate": 1, "queue_size": 1}}})


class _Auditor:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def record(self, event: dict) -> None:
        self.events.append(event)


def _ctx(decision_id: str) -> SimpleNamespace:
    return SimpleNamespace(route=SimpleNamespace(id="api", settings=ROUTE), decision_id=decision_id, request_id="r",
                           identity=Identity(sub="alice", method="jwt"), method="GET", host="h",
                           raw_path="/api/x", query_string="token=abc")


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_full_queue_drops_and_counts_instead_of_waiting():
    registry = CollectorRegistry()
    runner = ShadowRunner([ROUTE], registry, _Auditor())  # not started: nothing takes from the queue
    runner.offer(_ctx("1"), {}, None, "policy_denied")
    runner.offer(_ctx("2"), {}, None, "policy_denied")
    assert _value(registry, "iam_proxy_shadow_decisions_total", route="api", result="dropped") == 1
    offer = runner._queue.get_nowait()
    assert offer.request["decision_id"] == "1" and offer.request["http"]["query"] == "token=***"


def test_sampling_zero_offers_nothing():
    registry = CollectorRegistry()
    runner = ShadowRunner([ROUTE], registry, _Auditor(), draw=lambda: 0.99)
    runner.plans["api"] = runner.plans["api"].model_copy(update={"sample_rate": 0.5})
    runner.offer(_ctx("1"), {}, None, "policy_denied")
    assert runner._queue.empty()


def test_an_unanswered_candidate_is_an_error_not_a_disagreement():
    registry, auditor = CollectorRegistry(), _Auditor()
    runner = ShadowRunner([ROUTE], registry, auditor)
    runner.offer(_ctx("1"), {}, None, "policy_denied")
    offer = runner._queue.get_nowait()
    runner._record(offer, Verdict(False, ("policy_timeout",)), "rev", "opa")
    runner._record(offer, Verdict(True, ("granted",)), "rev", "embedded")
    assert _value(registry, "iam_proxy_shadow_decisions_total", route="api", result="error") == 1
    assert _value(registry, "iam_proxy_shadow_decisions_total", route="api", result="disagree") == 1
    assert [e["reason"] for e in auditor.events] == ["deny_to_allow"]
