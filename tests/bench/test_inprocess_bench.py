"""bench.inprocess in a tiny mode: each front door answers the benchmark's request with 200, and a
comparison against a git revision runs both versions. No numbers are judged here."""

from __future__ import annotations

import json
import subprocess

import pytest

from support import PYTHON, REPO


def _run(*args: str) -> dict:
    proc = subprocess.run([PYTHON, "-m", "bench.inprocess", "--requests", "500", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("mode", ["forward-auth", "ext-authz-http", "proxy"])
def test_each_mode_is_measured(mode):
    result = _run("--mode", mode)
    assert result["mode"] == mode and result["cache"] is True and result["requests"] == 500
    assert 0 < result["us_per_request_min"] <= result["us_per_request_q1"] <= result["us_per_request_median"]


def test_a_comparison_runs_the_revision_and_this_checkout():
    result = _run("--mode", "forward-auth", "--no-cache", "--against", "HEAD", "--rounds", "1")
    assert result["cache"] is False
    assert [len(runs) for runs in result["runs_us_per_request_q1"].values()] == [1, 1]
    assert list(result["runs_us_per_request_q1"]) == ["HEAD", "this checkout"]
    assert result["change"].endswith("%") and result["median_before"] > 0 and result["median_after"] > 0
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=REPO, capture_output=True, text=True).stdout
    assert "iam-inprocess-rev-" not in worktrees  # removed again
