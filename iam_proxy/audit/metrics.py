"""Per-sink audit metrics, registered on the proxy's Prometheus registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.queued = Gauge("iam_proxy_audit_queued_events", "Events spooled and not yet acknowledged by the sink",
                            ["sink"], registry=registry)
        self.delivered = Counter("iam_proxy_audit_delivered_events_total", "Events the sink acknowledged",
                                 ["sink"], registry=registry)
        self.retried = Counter("iam_proxy_audit_retries_total", "Delivery attempts repeated after a failure",
                               ["sink"], registry=registry)
        self.failed = Counter("iam_proxy_audit_failed_attempts_total",
                              "Delivery attempts (batches) or direct writes that failed", ["sink"], registry=registry)
        self.dropped = Counter("iam_proxy_audit_dropped_events_total",
                               "Events that will never reach the sink, by reason "
                               "(spool_full, drop_oldest, write_error, corrupt)",
                               ["sink", "reason"], registry=registry)
        self.spool_bytes = Gauge("iam_proxy_audit_spool_bytes", "Spool bytes the sink has not acknowledged yet",
                                 ["sink"], registry=registry)
        self.oldest_age = Gauge("iam_proxy_audit_oldest_undelivered_seconds",
                                "Age of the oldest event the sink has not acknowledged (0 when caught up)",
                                ["sink"], registry=registry)
        self.blocked_requests = Counter("iam_proxy_audit_blocked_requests_total",
                                        "Requests refused with 503 audit_unavailable (spool full, overflow=block, "
                                        "or a direct sink failing)", registry=registry)
