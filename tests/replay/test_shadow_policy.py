"""Shadow policies on a real proxy: the candidate runs beside the live policy, after the response,
and only its disagreements are counted and audited; `iam-proxy policy diff` summarises them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from replay_support import candidate_policies, traffic
from support import run_cli


def _shadow_events(proxy, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in proxy.audit_events() if e.get("kind") == "shadow"]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


@pytest.mark.parametrize("engine", ["embedded", "opa"])
def test_disagreements_are_counted_and_audited_and_never_change_the_answer(
        proxy_factory, proxy_config, issuer, tmp_path, opa_factory, engine):
    candidate = candidate_policies(tmp_path)
    shadow = {"dir": str(candidate)} if engine == "embedded" else {"opa_url": opa_factory([candidate]).url}
    proxy_config["routes"][0]["policy"]["shadow"] = shadow
    proxy = proxy_factory(proxy_config)
    assert traffic(proxy, issuer) == [200, 403, 403, 200, 200, 401]  # the live policy decided, as before

    events = _shadow_events(proxy, 2)
    assert len(events) == 2  # bob and dave; everyone else agrees
    by_sub = {e["identity"]["sub"]: e for e in events}
    assert by_sub["dave"]["reason"] == "allow_to_deny"
    assert by_sub["dave"]["decision"]["allowed"] is True and by_sub["dave"]["shadow"]["allowed"] is False
    assert by_sub["dave"]["shadow"]["reasons"] == ["user dave may not GET /api/reports/q3"]
    assert by_sub["dave"]["shadow"]["engine"] == engine
    assert by_sub["bob"]["reason"] == "deny_to_allow"
    requests = {e["decision_id"] for e in proxy.audit_events() if e.get("kind") is None}
    assert {e["decision_id"] for e in events} <= requests  # each names the request it shadowed

    assert proxy.metric("iam_proxy_shadow_disagreements_total",
                        'route="api",rule="iam/authz/decision",direction="allow_to_deny"') == 1
    assert proxy.metric("iam_proxy_shadow_disagreements_total", 'direction="deny_to_allow"') == 1
    assert proxy.metric("iam_proxy_shadow_decisions_total", 'route="api",result="agree"') == 2  # alice, carol
    assert proxy.metric("iam_proxy_shadow_decisions_total", 'result="disagree"') == 2

    diff = run_cli("policy", "diff", "--events", str(proxy.audit_path), "--format", "json")
    assert diff.returncode == 0, diff.stderr
    report = json.loads(diff.stdout)
    assert report["disagreements"] == {"total": 2, "allow_to_deny": 1, "deny_to_allow": 1}
    groups = {(g["direction"], g["identity"]): g["count"] for g in report["groups"]}
    assert groups == {("allow_to_deny", "dave"): 1, ("deny_to_allow", "bob"): 1}
    text = run_cli("policy", "diff", "--events", str(proxy.audit_path)).stdout
    assert "disagreements: 2 (1 allow->deny, 1 deny->allow)" in text

    replay = json.loads(run_cli("policy", "replay", "--events", str(proxy.audit_path), "--policies",
                                str(candidate), "--format", "json").stdout)
    assert replay["events"] == 6 and replay["flips"]["total"] == 2  # shadow events are not replayed


def test_sample_rate_zero_shadows_nothing(proxy_factory, proxy_config, issuer, tmp_path):
    proxy_config["routes"][0]["policy"]["shadow"] = {"dir": str(candidate_policies(tmp_path)), "sample_rate": 0}
    proxy = proxy_factory(proxy_config)
    traffic(proxy, issuer)
    time.sleep(0.5)
    assert _shadow_events(proxy, 1, timeout=0.5) == []
    assert proxy.metric("iam_proxy_shadow_decisions_total") == 0


def test_a_shadow_needs_exactly_one_source(proxy_config, tmp_path):
    proxy_config["routes"][0]["policy"]["shadow"] = {"sample_rate": 0.5}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(proxy_config))
    check = run_cli("check", "--config", str(path))
    assert check.returncode == 2
    assert "routes[0].policy.shadow" in check.stderr and "exactly one of dir, bundle, opa_url" in check.stderr


def test_the_documented_shadow_route(proxy_config, issuer, tmp_path):
    """docs/shadow-policies.md as written: a relative candidate dir, a quarter of the decisions shadowed."""
    from snippets import snippet
    from support import ProxyProcess

    shutil.copytree(candidate_policies(tmp_path), tmp_path / "policies-next")
    proxy_config["routes"][0]["policy"] = yaml.safe_load(snippet("shadow-route-policy").text)["policy"]
    proxy = ProxyProcess(proxy_config, tmp_path, cwd=tmp_path).wait_ready()
    try:
        token = issuer.token("bob", ["sales"])
        with proxy.client() as client:
            assert {client.get("/api/invoices/1", headers={"Authorization": f"Bearer {token}"}).status_code
                    for _ in range(40)} == {403}
        time.sleep(1)
        shadowed = _shadow_events(proxy, 40, timeout=1)
        assert 0 < len(shadowed) < 40  # sampled: 10 expected; 0 has odds of 1 in 100,000
        assert proxy.metric("iam_proxy_shadow_disagreements_total", 'direction="deny_to_allow"') == len(shadowed)
        diff = subprocess.run(["bash", "-euc", snippet("shadow-diff").text], cwd=tmp_path, capture_output=True,
                              text=True, env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        assert diff.returncode == 0, diff.stderr
        assert f"disagreements: {len(shadowed)} (0 allow->deny, {len(shadowed)} deny->allow)" in diff.stdout
    finally:
        proxy.stop()
