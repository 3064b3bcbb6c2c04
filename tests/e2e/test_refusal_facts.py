"""A 401 says enough to act on: `audience_mismatch` names the token's `aud` beside the accepted ones
in the response, the proxy's log, the audit event and `explain`, and never the token itself."""

from __future__ import annotations

import time

from support import audit_event, run_cli


def test_audience_mismatch_shows_the_token_audience_beside_the_accepted_ones(proxy, issuer):
    token = issuer.token("alice", ["finance"], aud=["account", "another-service"])
    with proxy.client() as client:
        r = client.get("/api/invoices/1", headers={"authorization": f"Bearer {token}", "x-request-id": "aud-1"})
    assert r.status_code == 401
    body = r.json()
    assert body["reason"] == "audience_mismatch"
    assert body["token_audiences"] == ["account", "another-service"]
    assert body["accepted_audiences"] == ["iam-proxy"]

    event = audit_event(proxy, "aud-1")
    assert event["reason"] == "audience_mismatch"
    assert event["facts"] == {"token_audiences": ["account", "another-service"], "accepted_audiences": ["iam-proxy"]}
    deadline = time.monotonic() + 5
    while "audience_mismatch" not in proxy.process.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    logs = proxy.process.logs()
    assert "token aud ['account', 'another-service'], accepted ['iam-proxy']" in logs
    assert token not in logs and token not in r.text


def test_explain_shows_the_token_audience(proxy, issuer):
    token = issuer.token("alice", ["finance"], aud="another-service")
    result = run_cli("explain", "--config", str(proxy.config_path), "--url", "http://proxy.test/api/invoices/1",
                     "-H", f"Authorization: Bearer {token}")
    assert result.returncode == 1, result.stderr  # 1: not allowed
    assert "REJECTED (audience_mismatch, HTTP 401)" in result.stdout
    assert "token_audiences: ['another-service']" in result.stdout
    assert "accepted_audiences: ['iam-proxy']" in result.stdout
    assert token not in result.stdout


def test_the_facts_reach_ecs_documents():
    from iam_proxy.audit.render.ecs import render

    facts = {"token_audiences": ["account"], "accepted_audiences": ["iam-proxy"]}
    document = render({"decision_id": "d", "status": 401, "reason": "audience_mismatch", "facts": facts})
    assert document["iam_proxy"]["facts"] == facts
