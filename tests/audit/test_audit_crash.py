"""The audit promise under repeated SIGKILL with the SIEM receiver down for part of the run, with one
and with two workers (crash_harness.py; `make audit-crash` runs the long version)."""

from __future__ import annotations

import json

import pytest

from crash_harness import check, run

KILLS = 20


@pytest.mark.peer("rsyslog")
@pytest.mark.parametrize("workers", [1, 2])
def test_every_answered_request_has_exactly_one_event_through_20_kills(tmp_path, workers):
    results = run(tmp_path, workers, KILLS, seed=workers, run_seconds=(0.3, 0.8), log=lambda _: None)
    print(json.dumps(results, indent=2))
    check(results)
    assert results["kills"] == KILLS and results["answered"] > 20 * KILLS
    assert set(results["answered_by_status"]) == {200, 401, 403}
