"""docs/deployment.md's capacity table says what bench/results/capacity/ measured, arithmetic included."""

from __future__ import annotations

import json
import math

from support import REPO

ROWS = {  # the table's mode -> (results file, harness target)
    "full proxy": ("proxy-forward-auth", "iam-proxy"),
    "forward-auth, nginx `auth_request` with its auth cache": ("proxy-forward-auth", "iam-proxy-forward-auth"),
    "forward-auth, nginx `auth_request`, no auth cache": ("proxy-forward-auth", "iam-proxy-forward-auth-nocache"),
    "ext_authz from Envoy 1.40, gRPC": ("ext-authz", "envoy-ext-authz-grpc"),
    "ext_authz from Envoy 1.40, HTTP mode": ("ext-authz", "envoy-ext-authz-http"),
}


def test_every_row_matches_the_measured_results():
    lines = (REPO / "docs" / "deployment.md").read_text().splitlines()
    for mode, (results, target) in ROWS.items():
        measured = {r["name"]: r for r in json.loads((REPO / "bench" / "results" / "capacity" / f"{results}.json").read_text())}
        row = measured[target]
        line = next(line for line in lines if line.startswith(f"| {mode}"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        cpu = row["cpu_s_per_1k"]
        assert cells[1].startswith(f"{row['rps']:,.0f}"), (mode, cells[1], row["rps"])
        assert cells[2] == f"{cpu:.3f}", (mode, cells[2], cpu)
        assert cells[3] == f"{1000 / cpu:,.0f}", (mode, cells[3])
        assert cells[4] == str(math.ceil(10 * cpu)), (mode, cells[4])
        assert row["errors"] == 0 or f"({row['errors']} errors)" in cells[1]
