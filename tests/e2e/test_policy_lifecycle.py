"""Policy compile errors at start and at reload, malformed decisions, and the audit trail."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import yaml

from support import run_cli


BROKEN = "package iam.authz\n\nimport rego.v1\n\ndecision := {\"allowed\": true} if {\n  input.x ==\n}\n"


def test_policy_compile_error_at_start_refuses_and_names_file_and_line(proxy_factory, proxy_config, policy_dir):
    (policy_dir / "iam" / "authz.rego").write_text(BROKEN)
    proxy = proxy_factory(proxy_config, wait=False)
    assert proxy.process.proc.wait(30) == 2
    # OPA's parser (opa check) reports it where the expression breaks off, at the closing brace
    assert f"{policy_dir}/iam/authz.rego:7: unexpected }} token" in proxy.process.logs()

    check = run_cli("check", "--config", str(proxy.config_path))
    assert check.returncode == 2
    assert f"{policy_dir}/iam/authz.rego:7:" in check.stderr


def test_unsupported_builtin_is_refused_at_load(proxy_config, policy_dir, tmp_path):
    """net.cidr_contains evaluates to undefined in rego-cpp: a deny rule using it would never fire."""
    proxy_config = {**proxy_config, "policy": {**proxy_config["policy"], "engine": "embedded"}}
    (policy_dir / "iam" / "net.rego").write_text(
        "package iam.net\n\nimport rego.v1\n\ndeny if {\n\tnet.cidr_contains(\"10.0.0.0/8\", input.ip)\n}\n")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(proxy_config))
    check = run_cli("check", "--config", str(config_path))
    assert check.returncode == 2
    assert "net.rego:6: built-in net.cidr_contains is not supported" in check.stderr


def test_broken_edit_at_reload_keeps_last_good_policy(proxy, issuer, policy_dir):
    finance = {"Authorization": f"Bearer {issuer.token('alice', ['finance'])}"}
    sales = {"Authorization": f"Bearer {issuer.token('bob', ['sales'])}"}
    revision = httpx.get(f"{proxy.admin_url}/readyz").json()["policy_revision"]

    (policy_dir / "iam" / "authz.rego").write_text(BROKEN)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proxy.metric("iam_proxy_policy_reloads_total", 'result="error"') < 1:
        time.sleep(0.1)
    assert proxy.metric("iam_proxy_policy_reloads_total", 'result="error"') == 1
    assert "iam/authz.rego:7" in proxy.process.logs()
    with proxy.client() as c:
        assert c.get("/api/invoices/1", headers=finance).status_code == 200  # still the last good policy
        assert c.get("/api/invoices/1", headers=sales).status_code == 403
    assert httpx.get(f"{proxy.admin_url}/readyz").json()["policy_revision"] == revision

    # A good edit is picked up: now everyone in any group may read invoices.
    (policy_dir / "iam" / "authz.rego").write_text(
        "package iam.authz\n\nimport rego.v1\n\ndecision := {\"allowed\": true, \"reasons\": [\"open\"]}\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proxy.metric("iam_proxy_policy_reloads_total", 'result="ok"') < 1:
        time.sleep(0.1)
    with proxy.client() as c:
        assert c.get("/api/invoices/1", headers=sales).status_code == 200
    assert httpx.get(f"{proxy.admin_url}/readyz").json()["policy_revision"] != revision


def test_malformed_and_undefined_decisions_deny(proxy_factory, proxy_config, policy_dir, issuer):
    (policy_dir / "odd.rego").write_text(
        "package odd\n\nimport rego.v1\n\nstring_decision := \"yes\"\n\n"
        "allowed_string := {\"allowed\": \"true\"}\n\nnever if input.nothing == 1\n")
    routes = proxy_config["routes"]
    for rid, path in (("s", "odd/string_decision"), ("a", "odd/allowed_string"), ("u", "odd/never")):
        routes.append({**routes[0], "id": rid, "match": {"path": f"/{rid}/**"}, "policy": {"path": path}})
    proxy = proxy_factory(proxy_config)
    token = {"Authorization": f"Bearer {issuer.token('alice', ['finance'])}"}
    with proxy.client() as c:
        assert c.get("/s/x", headers=token).json()["reason"] == "policy_malformed"
        assert c.get("/a/x", headers=token).json()["reason"] == "policy_malformed"
        r = c.get("/u/x", headers=token)
    assert r.status_code == 403
    assert r.json()["reason"] == "policy_undefined"


def test_opa_envoy_plugin_policy_works_unchanged(proxy_factory, proxy_config, issuer):
    proxy_config["routes"].append({"id": "envoy", "match": {"path": "/envoy/**", "methods": ["GET"]},
                                   "upstream": proxy_config["routes"][0]["upstream"],
                                   "authenticators": ["bearer"], "policy": {"path": "envoy/authz/allow"}})
    proxy = proxy_factory(proxy_config)
    alice = {"Authorization": f"Bearer {issuer.token('alice')}"}
    with proxy.client() as c:
        assert c.get("/envoy/status", headers=alice).status_code == 200
        assert c.get("/envoy/people/alice", headers=alice).status_code == 200
        assert c.get("/envoy/people/bob", headers=alice).status_code == 403


def test_exactly_one_audit_event_per_request_and_no_credentials(proxy, issuer):
    finance_token = issuer.token("alice", ["finance"])
    sales_token = issuer.token("bob", ["sales"])
    with proxy.client() as c:
        responses = [
            c.get("/api/invoices/1", headers={"Authorization": f"Bearer {finance_token}"}),
            c.get("/api/invoices/1", headers={"Authorization": f"Bearer {sales_token}",
                                              "Cookie": "session=s3cr3t-cookie"}),
            c.get("/api/invoices/1"),
            c.get("/api/invoices/1", headers={"Authorization": "Bearer broken.token.value"}),
            c.get("/nowhere"),
            c.get("/public/p?access_token=qs-s3cr3t"),
        ]
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 403, 401, 401, 404, 200]
    events = proxy.wait_audit(len(responses))
    assert len(events) == len(responses)
    assert len({e["decision_id"] for e in events}) == len(events)
    by_request = Counter(e["decision_id"] for e in events)
    assert max(by_request.values()) == 1
    assert [e["status"] for e in events] == statuses
    assert [e["outcome"] for e in events] == ["allowed", "denied", "denied", "denied", "denied", "allowed"]
    assert [e["reason"] for e in events] == ["allowed", "policy_denied", "credential_missing",
                                             "token_malformed", "no_route", "allowed"]
    assert events[0]["identity"]["sub"] == "alice"
    assert events[0]["decision"]["allowed"] is True
    assert events[1]["decision"]["reasons"] == ["user bob may not GET /api/invoices/1"]
    assert events[0]["bundles"]["policies"]["revision"]
    # error ids seen by clients match decision ids in the audit trail
    assert responses[1].json()["error_id"] == events[1]["decision_id"]
    raw = proxy.audit_path.read_text()
    for secret in (finance_token, sales_token, "s3cr3t-cookie", "qs-s3cr3t", "broken.token.value",
                   finance_token.split(".")[2]):
        assert secret not in raw
    assert events[0]["input"]["attributes"]["request"]["http"]["headers"]["authorization"] == "Bearer ***"
