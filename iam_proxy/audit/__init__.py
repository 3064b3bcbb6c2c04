"""Audit: exactly one event per request, keyed by decision_id, written to the configured sinks."""
