"""`make bench` has the ext_authz rows: the real harness, in a tiny mode, measures Envoy with
iam-proxy behind its ext_authz filter (gRPC and HTTP mode) next to iam-proxy as the proxy. No
numbers are judged here (docs/envoy.md quotes a full run)."""

from __future__ import annotations

import json
import subprocess

from support import PYTHON, REPO

TARGETS = ["iam-proxy", "envoy-ext-authz-grpc", "envoy-ext-authz-http"]


def test_the_ext_authz_rows_are_measured(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [PYTHON, "-m", "bench.harness", "--targets", ",".join(TARGETS), "--duration", "1", "--warmup", "1",
         "--repeats", "1", "--fractions", "0.5", "--distinct-tokens", "0", "--iam-workers", "1", "--no-plot",
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["name"]: r for r in json.loads((out / "latest.json").read_text())}
    assert list(results) == TARGETS
    for name in TARGETS:
        assert not results[name].get("failed") and results[name]["rps"] > 0, results[name]
    assert "ext_authz grpc" in results["envoy-ext-authz-grpc"]["notes"]
