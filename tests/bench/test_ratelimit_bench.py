"""bench/ratelimit.py in a tiny mode against a real redis-server, so that it cannot silently rot
(no numbers are judged here)."""

from __future__ import annotations

import json
import subprocess

from support import PYTHON, REPO


def test_tiny_run_writes_every_figure(tmp_path):
    out = tmp_path / "ratelimit.json"
    proc = subprocess.run([PYTHON, "-m", "bench.ratelimit", "--n", "64", "--rounds", "1", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) == {"redis PING", "redis GCRA, 1 limit", "redis GCRA, 3 limits", "memory GCRA, 1 limit",
                            "admit, memory"}
    assert results["redis PING"]["vs_ping"] == 1.0
    assert all(row["median_us"] > 0 and row["calls_per_s_64_in_flight"] > 0 for row in results.values())
