"""Policy replay and shadow policies: recorded decisions re-decided under a candidate policy.

    events.py     read audit events back (audit files, rotated copies, spool segments; a time range)
    redacted.py   which redacted input values a candidate policy can read ("cannot replay")
    candidate.py  the candidate policy as an engine: embedded (dir or bundle) or an OPA server
    replay.py     re-decide each event and classify it (unchanged, flip, cannot replay)
    report.py     flips grouped by route, rule, identity and reason; text and JSON
    cli.py        `iam-proxy policy replay` and `iam-proxy policy diff`
"""
