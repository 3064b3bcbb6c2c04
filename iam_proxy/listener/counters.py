"""Listener refusals and TLS handshake failures, counted in every worker and exported as one.

The cells live on the audit metrics Board (audit/metrics.py), whose memory is shared by the worker
processes, so the admin listener (worker 0) exports what every worker refused.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from ..audit.metrics import EXTRA_CELLS, Board

LISTENERS = ("proxy", "admin", "ext_authz_http")
REFUSALS = ("header_timeout", "body_timeout", "uri_too_long", "header_line_too_long", "too_many_headers",
            "headers_too_large", "malformed", "connection_limit")
HANDSHAKE_FAILURES = ("certificate_expired", "certificate_revoked", "certificate_untrusted",
                      "certificate_wrong_usage", "certificate_invalid", "certificate_missing", "protocol_version",
                      "no_shared_cipher", "not_tls", "timeout", "closed", "other")
_FIELDS = (*(f"refused:{r}" for r in REFUSALS), *(f"handshake:{r}" for r in HANDSHAKE_FAILURES))
assert len(LISTENERS) * len(_FIELDS) <= EXTRA_CELLS, "the Board's per-worker cells cannot hold every counter"


def _index(listener: str, field: str) -> int:
    return LISTENERS.index(listener) * len(_FIELDS) + _FIELDS.index(field)


class ListenerCounters:
    """This worker's counters on `board`; `collect()` sums every worker's."""

    def __init__(self, board: Board, worker: int = 0) -> None:
        self.board = board
        self._mine = board.extra(worker)

    def refused(self, listener: str, reason: str) -> None:
        self._mine[_index(listener, f"refused:{reason}")] += 1

    def handshake_failed(self, listener: str, reason: str) -> None:
        self._mine[_index(listener, f"handshake:{reason}")] += 1

    def total(self, listener: str, field: str) -> float:
        i = _index(listener, field)
        return sum(self.board.extra(w)[i] for w in range(self.board.workers))

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        refusals = CounterMetricFamily(
            "iam_proxy_listener_refusals", "Connections or requests the listener cut off before the app saw "
            "a request, by reason (" + ", ".join(REFUSALS) + ")", labels=["listener", "reason"])
        handshakes = CounterMetricFamily(
            "iam_proxy_tls_handshake_failures", "TLS handshakes that failed or were abandoned, by reason",
            labels=["listener", "reason"])
        for listener in LISTENERS:
            for reason in REFUSALS:
                refusals.add_metric([listener, reason], self.total(listener, f"refused:{reason}"))
            for reason in HANDSHAKE_FAILURES:
                handshakes.add_metric([listener, reason], self.total(listener, f"handshake:{reason}"))
        yield refusals
        yield handshakes
