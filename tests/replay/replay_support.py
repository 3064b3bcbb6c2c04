"""Recorded traffic and a candidate policy shared by the replay and shadow tests."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from support import copy_policies


def send_traffic(proxy, issuer) -> list[int]:
    """Two allows, two denials, one public allow, one unauthenticated request (not a decision);
    the statuses the client got."""
    calls = [("alice", ["finance"], "GET", "/api/invoices/1"), ("bob", ["sales"], "GET", "/api/invoices/1"),
             ("carol", ["auditors"], "POST", "/api/invoices/1"), ("dave", ["auditors"], "GET", "/api/reports/q3")]
    with httpx.Client(base_url=proxy.url) as client:
        statuses = [client.request(method, path, headers={"Authorization": f"Bearer {issuer.token(sub, groups)}"})
                    .status_code for sub, groups, method, path in calls]
        return statuses + [client.get("/public/hello").status_code, client.get("/api/invoices/1").status_code]


def traffic(proxy, issuer) -> list[int]:
    """send_traffic, once its six request events are in the audit file."""
    statuses = send_traffic(proxy, issuer)
    assert len([e for e in proxy.wait_audit(6) if e.get("kind") is None]) == 6  # shadow events come later
    return statuses


def candidate_policies(tmp_path: Path) -> Path:
    """Auditors lose reports (dave flips to deny); sales may read invoices (bob flips to allow)."""
    target = copy_policies(tmp_path / "candidate")
    data = json.loads((target / "rbac" / "data.json").read_text())
    data["permissions"]["auditors"] = [{"methods": ["GET"], "path": "/api/invoices/**"}]
    data["permissions"]["sales"] = [{"methods": ["GET"], "path": "/api/invoices/**"}]
    (target / "rbac" / "data.json").write_text(json.dumps(data))
    return target
