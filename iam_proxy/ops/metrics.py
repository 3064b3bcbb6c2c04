"""Prometheus metrics, on a registry per proxy instance (so tests can build several)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("iam_proxy_requests_total", "Requests by route, outcome and reason",
                                ["route", "outcome", "reason"], registry=self.registry)
        self.latency = Histogram("iam_proxy_request_seconds", "Time from request to response end",
                                 ["outcome"], registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))
        self.policy_reloads = Counter("iam_proxy_policy_reloads_total", "Policy reloads by result",
                                      ["result"], registry=self.registry)
        self.policy_decisions = Counter("iam_proxy_policy_decisions_total",
                                        "Policy decisions by engine and result (allowed, denied, or the reason code)",
                                        ["engine", "result"], registry=self.registry)
        self.policy_seconds = Histogram("iam_proxy_policy_decision_seconds", "Time to a policy decision",
                                        ["engine"], registry=self.registry,
                                        buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1))
        self.decision_cache = Counter("iam_proxy_decision_cache_total", "Decision cache lookups (hit, miss)",
                                      ["result"], registry=self.registry)
        self.bundle_loads = Counter("iam_proxy_bundle_loads_total",
                                    "Policy bundle activations by result (ok, not_modified, refused, error)",
                                    ["result"], registry=self.registry)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once: the request path counts several times a request,
        and prometheus_client checks and locks on every `labels` call."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found
