"""The benchmark harness in a tiny mode, so that `make bench` cannot silently rot.

It runs the real harness (wrk, our own nginx upstream, the real iam-proxy process) for about a
second per phase and checks the shape of what it writes. No numbers are judged here: the benchmark
itself lives in bench/ and is run with `make bench`.
"""

from __future__ import annotations

import json
import subprocess

from support import PYTHON, REPO

REQUIRED = {"name", "rps", "p50_ms", "p99_ms", "cpu_s_per_1k", "rss_mb", "errors"}


def test_tiny_run_writes_results_for_upstream_and_iam_proxy(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [PYTHON, "-m", "bench.harness", "--targets", "upstream-direct,iam-proxy", "--duration", "1",
         "--warmup", "1", "--repeats", "1", "--fractions", "0.5", "--distinct-tokens", "50",
         "--iam-workers", "2", "--no-plot", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((out / "latest.json").read_text())
    assert [r["name"] for r in results] == ["upstream-direct", "iam-proxy"]
    for result in results:
        assert REQUIRED <= result.keys(), result
        assert result["errors"] == 0, result
        assert result["rps"] > 0 and result["p50_ms"] > 0 and result["p99_ms"] >= result["p50_ms"]
        assert result["rss_mb"] > 0 and result["cpu_s_per_1k"] > 0
        assert len(result["curve"]) == 1
        assert result["light_cpu_ms_per_request"] >= 0
    iam = results[1]
    assert iam["distinct_tokens"] == 50
    assert iam["processes"] == 3  # the supervising parent and two workers

    meta = json.loads((out / "latest-meta.json").read_text())
    assert meta["machine"]["cores"] >= 1 and meta["machine"]["cpu_model"]
    assert len(meta["targets"]) == 5  # the five targets (oauth2-proxy not run: not measured)
    markdown = (out / "latest.md").read_text()
    assert "| iam-proxy |" in markdown and "## Targets" in markdown


def test_tiny_stack_comparison_writes_one_row_per_combination(tmp_path):
    # granian is in the `bench` extra only; uvicorn and aiohttp are what the proxy itself runs on
    proc = subprocess.run(
        [PYTHON, "-m", "bench.stack", "--servers", "uvicorn", "--clients", "none,aiohttp,http1", "--seconds", "1",
         "--repeats", "1", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "stack.json").read_text())["rows"]
    assert [(r["server"], r["client"]) for r in rows] == [("uvicorn", "none"), ("uvicorn", "aiohttp"),
                                                          ("uvicorn", "http1")]
    assert all(r["rps"] > 0 and r["errors"] == 0 for r in rows), rows
    assert "| uvicorn | http1 |" in (tmp_path / "stack.md").read_text()


def test_edge_checks_report_each_check_and_the_share_of_a_request(tmp_path):
    results = tmp_path / "latest.json"
    results.write_text(json.dumps([{"name": "iam-proxy", "cpu_s_per_1k": 0.5}]))
    proc = subprocess.run([PYTHON, "-m", "bench.edge_checks", "--n", "500", "--json", "--results", str(results)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert set(report["checks"]) == {"header rewrite", "input masking", "token times", "forward-auth describe"}
    assert all(row["mean_us"] > 0 for row in report["checks"].values())
    assert report["request_cpu_us"] == 500
    assert report["share_percent"] == round(100 * report["proxied_request_us"] / 500, 2)


def test_one_request_at_a_time_reports_each_gap_and_each_part(tmp_path):
    proc = subprocess.run([PYTHON, "-m", "bench.cold", "--targets", "upstream-direct,iam-proxy", "--gaps", "0,2",
                           "--requests", "30", "--part-samples", "5", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "cold.json").read_text())
    assert [t["name"] for t in report["targets"]] == ["upstream-direct", "iam-proxy"]
    for target in report["targets"]:
        assert [row["gap_ms"] for row in target["by_gap"]] == [0, 2]
        assert all(row["p50_ms"] > 0 and row["cpu_ms_per_request"] >= 0 for row in target["by_gap"])
    assert [p["part"] for p in report["parts"]] == ["ES256 signature (the assertion)", "Ed25519 signature (for comparison)",
                                                     "opa-lib decision (policies/)"]
    assert all(p["back_to_back_us"] > 0 and p["after_gap_us"] > 0 for p in report["parts"])
    assert "| iam-proxy |" in (tmp_path / "cold.md").read_text()
