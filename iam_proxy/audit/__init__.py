"""Audit: exactly one event per request, keyed by decision_id, shipped to SIEMs without loss.

    event.py     the native event (OPA decision-log compatible names); credentials are masked by
                 iam_proxy/redaction.py (shared with decision logs, logs and explain)
    render/      native, ecs, ocsf, cef
    privacy.py   per-sink drop / mask / pseudonymize / encrypt rules
    spool.py     the bounded on-disk spool with one cursor per delivered sink (at-least-once)
    sinks/       file and stdout (direct), syslog and HTTP collectors (delivered from the spool)
    delivery.py  one task per delivered sink: batch, render, send, retry with backoff, acknowledge
    chain.py     hash chain and signed checkpoints for the file sink; `iam-proxy audit verify`
    auditor.py   what the pipeline calls: admit() and emit(event)
    config.py    the `audit:` settings

User guide: docs/audit.md.
"""
