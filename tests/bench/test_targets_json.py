"""Issue 20's targets table as `make bench` writes it (`targets.json`), in a tiny run, so it cannot rot.

The tiny run measures a few targets for about a second each; every other row must still be there,
saying it was not measured (`value: null`, `met: false`, a `note` naming what was missing). No
timing is judged here.
"""

from __future__ import annotations

import json
import subprocess

from support import PYTHON, REPO

from bench.report import issue_target_names, issue_targets

ROW_KEYS = {"name", "value", "target", "met", "unit", "note"}


def _check_shape(rows: list[dict]) -> None:
    assert [row["name"] for row in rows] == issue_target_names()
    for row in rows:
        assert ROW_KEYS <= row.keys(), row
        assert isinstance(row["target"], str) and row["target"], row
        assert isinstance(row["met"], bool), row
        assert isinstance(row["note"], str) and row["note"], row
        if row["value"] is None:
            assert row["met"] is False and row["note"].startswith("not measured"), row
        else:
            assert isinstance(row["value"], (int, float)), row


def test_tiny_run_writes_every_target_row(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [PYTHON, "-m", "bench.harness", "--targets", "upstream-direct,iam-proxy,iam-proxy-mix-nocache",
         "--duration", "1", "--warmup", "1", "--repeats", "1", "--fractions", "0.5", "--distinct-tokens", "0",
         "--token-mix", "40", "--decision-n", "50", "--iam-workers", "2", "--no-plot", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "targets.json").read_text())
    _check_shape(rows)
    by_name = {row["name"]: row for row in rows}
    # measured in this run: the light-load figure (iam-proxy, upstream-direct) and the default engine
    assert by_name["median added over a direct call at light load"]["value"] is not None
    default = by_name["embedded decision, Python call included (opa-lib)"]  # auto's choice where the library is built
    assert default["value"] > 0 and "the target" in default["note"]
    assert "the target applies to opa-lib" in by_name["embedded decision, Python call included (embedded)"]["note"]
    # oauth2-proxy was not run: the ratios against it say so
    nocache = by_name["throughput, distinct tokens, decision cache off, vs oauth2-proxy"]
    assert nocache["value"] is None and "oauth2-proxy-mix not run" in nocache["note"]
    results = json.loads((out / "latest.json").read_text())
    mixed = next(r for r in results if r["name"] == "iam-proxy-mix-nocache")
    assert mixed["token_mix"] == 40 and mixed["errors"] == 0
    assert len(mixed["load_average_at_start"]) == 3
    assert "## Issue 20 targets" in (out / "latest.md").read_text()


def _result(name: str, rps: float, **extra) -> dict:
    return {"name": name, "rps": rps, "errors": 0, "light_p50_ms": 1.0, "light_rps": 200.0,
            "p99_at_half_peak_ms": 5.0, "half_peak_rps": rps / 2, **extra}


def test_verdicts_follow_the_measured_figures():
    results = [_result("upstream-direct", 50_000, light_p50_ms=0.2), _result("iam-proxy", 3000, light_p50_ms=1.5),
               _result("iam-proxy-mix", 2700), _result("iam-proxy-mix-nocache", 1900, p99_at_half_peak_ms=9.0),
               _result("iam-proxy-mix-nocache-1worker", 1000), _result("oauth2-proxy-mix", 2000),
               _result("iam-proxy-forward-auth-nocache", 2000, cpu_s_per_1k_by_process=[0.05, 0.25]),
               {"name": "envoy-ext-authz-grpc", "failed": "Envoy not found"}]
    decision = {"policy": "p", "results": {"opa-lib": {"n": 10, "mean_us": 90, "p50_us": 80, "p99_us": 120},
                                           "opa-wasm": {"error": "RuntimeError: no opa"}}}
    rows = issue_targets(results, decision, 10_000)
    _check_shape(rows)
    by_name = {row["name"]: row for row in rows}
    assert (by_name["throughput, distinct tokens, decision cache off, vs oauth2-proxy"]["value"],
            by_name["throughput, distinct tokens, decision cache off, vs oauth2-proxy"]["met"]) == (0.95, False)
    assert by_name["throughput, distinct tokens, decision cache on, vs oauth2-proxy"]["met"] is True  # 1.35x
    assert by_name["p99 at half of each one's own peak, uncached, vs oauth2-proxy"]["met"] is False  # 9 > 5 ms
    assert by_name["median added over a direct call at light load"]["value"] == 1.3
    assert by_name["embedded decision, Python call included (opa-lib)"]["met"] is True
    wasm = by_name["embedded decision, Python call included (opa-wasm)"]
    assert wasm["value"] is None and "no opa" in wasm["note"]
    assert by_name["2 workers vs 1 worker on 2 cores"]["value"] == 1.9
    assert by_name["forward-auth decisions per second per core, no front cache"]["value"] == 4000  # 1000 / 0.25
    grpc = by_name["ext_authz gRPC decisions per second per core, no front cache"]
    assert grpc["value"] is None and "Envoy not found" in grpc["note"]
    # the same throughput rows with engine embedded (rego-cpp), judged by the same targets
    results += [_result("iam-proxy-embedded-mix-nocache", 2100), _result("iam-proxy-embedded-mix-nocache-1worker", 1500)]
    by_name = {row["name"]: row for row in issue_targets(results, decision, 10_000)}
    rego_cpp = by_name["throughput, distinct tokens, decision cache off, vs oauth2-proxy (engine embedded, rego-cpp)"]
    assert (rego_cpp["value"], rego_cpp["met"]) == (1.05, True)
    assert by_name["throughput, distinct tokens, decision cache on, vs oauth2-proxy (engine embedded, rego-cpp)"]["value"] is None
    assert by_name["2 workers vs 1 worker on 2 cores (engine embedded, rego-cpp)"]["value"] == 1.4
