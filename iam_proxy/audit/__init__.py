"""Audit: exactly one event per request, keyed by decision_id, shipped to SIEMs without loss.

    event.py       the native event (OPA decision-log compatible names); credentials are masked by
                   iam_proxy/redaction.py (shared with decision logs, logs and explain)
    writeahead.py  AuditedResponse: every front door's `send`; the event is recorded before the last byte
    auditor.py     what the front doors call: admit() and record(event)
    journal.py     one worker's durable record: spool, local files, delivery tasks (one per worker)
    spool.py       the bounded on-disk spool with one cursor per reading sink (at-least-once)
    filefeed.py    a local file fed from the spool, exactly once
    sinks/         file and stdout, syslog and HTTP collectors (delivered from the spool)
    delivery.py    one task per delivered sink: batch, render, send, retry with backoff, acknowledge
    render/        native, ecs, ocsf, cef;  privacy.py: per-sink drop / mask / pseudonymize / encrypt
    chain.py       hash chain and signed checkpoints of the file sink; verify.py: `iam-proxy audit verify`
    metrics.py     audit metrics in a table all workers share
    config.py      the `audit:` settings

User guide: docs/audit.md.
"""
