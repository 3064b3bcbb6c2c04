"""The remote OPA engine against the real `opa run --server`: decisions, fail-closed reason codes,
killing and freezing OPA mid-test, dry run, per-route engines, decision logs."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest

from iam_proxy.core.errors import ConfigError
from iam_proxy.settings import parse_settings
from support import REPO

pytestmark = pytest.mark.peer("opa")

ODD_POLICY = """package odd

import rego.v1

string_decision := "yes"

null_decision := null

allowed_string := {"allowed": "true"}

never if input.nothing == 1

conflict := 1

conflict := 2 if true
"""


def _opa_config(config: dict, url: str, timeout: float = 0.5) -> dict:
    config["policy"]["engine"] = "opa"
    config["policy"]["opa"] = {"url": url, "timeout_seconds": timeout, "health_interval_seconds": 0.2}
    return config


def test_decisions_come_from_the_real_opa_with_reasons_and_decision_log(proxy_factory, proxy_config, opa_server,
                                                                          issuer, tmp_path):
    config = _opa_config(proxy_config, opa_server.url)
    config["policy"]["decision_log"] = {"path": str(tmp_path / "decisions.jsonl")}
    proxy = proxy_factory(config)
    alice = issuer.token("alice", ["finance"])
    with proxy.client() as c:
        allowed = c.get("/api/invoices/1?access_token=qs-secret", headers={"Authorization": f"Bearer {alice}"})
        denied = c.get("/api/invoices/1", headers={"Authorization": f"Bearer {issuer.token('bob', ['sales'])}"})
    assert allowed.status_code == 200
    assert denied.status_code == 403
    assert denied.json()["reasons"] == ["user bob may not GET /api/invoices/1"]

    events = proxy.wait_audit(2, timeout=5)
    assert [e["decision"]["engine"] for e in events] == ["opa", "opa"]
    assert events[0]["decision"]["revision"] == "opa-1.22.3"
    assert events[0]["bundles"] == {"policies": {"revision": "opa-1.22.3"}}
    assert events[1]["result"] == {"allowed": False, "reasons": ["user bob may not GET /api/invoices/1"]}

    logged = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert [e["decision_id"] for e in logged] == [e["decision_id"] for e in events]
    first = logged[0]
    assert {"decision_id", "path", "input", "result", "bundles", "labels", "timestamp", "metrics",
            "requested_by"} <= set(first)
    assert first["path"] == "iam/authz/decision"
    assert first["result"] == {"allowed": True, "reasons": ["granted by role or group"]}
    assert first["requested_by"] == "127.0.0.1"
    assert first["input"]["attributes"]["request"]["http"]["headers"]["authorization"] == "Bearer ***"
    assert first["input"]["parsed_query"]["access_token"] == ["***"]
    assert "/input/attributes/request/http/headers/authorization" in first["masked"]
    raw = (tmp_path / "decisions.jsonl").read_text()
    assert alice not in raw and "qs-secret" not in raw
    assert proxy.metric("iam_proxy_policy_decisions_total", 'engine="opa",result="allowed"') == 1


def test_undefined_null_string_and_conflicting_decisions_deny_with_distinct_reasons(
        proxy_factory, proxy_config, opa_factory, issuer, tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "odd.rego").write_text(ODD_POLICY)
    opa = opa_factory([REPO / "policies", odd])
    config = _opa_config(proxy_config, opa.url)
    routes = config["routes"]
    cases = {"s": "odd/string_decision", "n": "odd/null_decision", "a": "odd/allowed_string",
             "u": "odd/never", "c": "odd/conflict", "m": "odd/missing_rule"}
    for rid, path in cases.items():
        routes.append({**routes[0], "id": rid, "match": {"path": f"/{rid}/**"}, "policy": {"path": path}})
    proxy = proxy_factory(config)
    token = {"Authorization": f"Bearer {issuer.token('alice', ['finance'])}"}
    with proxy.client() as c:
        got = {rid: c.get(f"/{rid}/x", headers=token) for rid in cases}
    assert {rid: r.json()["reason"] for rid, r in got.items()} == {
        "s": "policy_malformed", "n": "policy_malformed", "a": "policy_malformed",
        "u": "policy_undefined", "c": "policy_error", "m": "policy_undefined"}
    assert all(r.status_code == 403 for r in got.values())
    events = proxy.wait_audit(len(cases), timeout=5)
    assert all(e["outcome"] != "allowed" for e in events)
    assert proxy.metric("iam_proxy_policy_decisions_total", 'engine="opa",result="policy_malformed"') == 3


def test_opa_frozen_then_killed_mid_test_denies_with_503_then_recovers(proxy_factory, proxy_config,
                                                                      opa_factory, issuer):
    opa = opa_factory([REPO / "policies"])
    proxy = proxy_factory(_opa_config(proxy_config, opa.url, timeout=0.3))
    alice = {"Authorization": f"Bearer {issuer.token('alice', ['finance'])}"}
    bob = {"Authorization": f"Bearer {issuer.token('bob', ['sales'])}"}
    with proxy.client() as c:
        assert c.get("/api/invoices/1", headers=alice).status_code == 200

        opa.process.proc.send_signal(signal.SIGSTOP)  # connections are accepted, nothing answers
        try:
            frozen = c.get("/api/invoices/1", headers=alice)
        finally:
            opa.process.proc.send_signal(signal.SIGCONT)
        assert frozen.status_code == 503
        assert frozen.json()["reason"] == "policy_timeout"
        # OPA now answers the frozen request late; that answer must not become bob's decision.
        assert c.get("/api/invoices/1", headers=bob).status_code == 403

        opa.stop(signal.SIGKILL)
        down = c.get("/api/invoices/1", headers=alice)
        assert down.status_code == 503
        assert down.json()["reason"] == "policy_unavailable"
        public = c.get("/public/hello")  # no fallback to anonymous or allow, whatever the route
        assert public.status_code == 503
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and httpx.get(f"{proxy.admin_url}/readyz").status_code == 200:
            time.sleep(0.1)
        ready = httpx.get(f"{proxy.admin_url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["policy:opa"] is False

        opa.start()  # same port
        assert c.get("/api/invoices/1", headers=alice).status_code == 200
    events = proxy.wait_audit(7, timeout=5)
    assert [(e["status"], e["reason"]) for e in events] == [
        (200, "allowed"), (503, "policy_timeout"), (403, "policy_denied"), (503, "policy_unavailable"),
        (503, "policy_unavailable"), (200, "allowed")]
    assert events[1]["outcome"] == "error" and events[3]["outcome"] == "error"
    assert proxy.metric("iam_proxy_policy_decisions_total", 'engine="opa",result="policy_unavailable"') == 2
    assert proxy.metric("iam_proxy_policy_decisions_total", 'engine="opa",result="policy_timeout"') == 1


def test_per_route_engines_and_dry_run(proxy_factory, proxy_config, opa_factory, issuer):
    """Globally in process (auto: opa-lib here); /api asks OPA in dry run, /public asks OPA, /emb stays in process."""
    opa = opa_factory([REPO / "policies"])
    proxy_config["policy"]["opa"] = {"url": opa.url, "timeout_seconds": 0.5}
    routes = proxy_config["routes"]
    routes[0]["policy"].update(engine="opa", dry_run=True)
    routes[1]["policy"]["engine"] = "opa"
    routes.append({**routes[0], "id": "emb", "match": {"path": "/emb/**"}, "policy": {"path": "iam/authz/decision"}})
    proxy = proxy_factory(proxy_config)
    bob = {"Authorization": f"Bearer {issuer.token('bob', ['sales'])}"}
    with proxy.client() as c:
        assert c.get("/emb/x", headers=bob).status_code == 403
        assert c.get("/api/invoices/1", headers=bob).status_code == 200  # denied, but dry run
        opa.stop(signal.SIGKILL)
        assert c.get("/api/invoices/1", headers=bob).status_code == 200  # dry run never blocks...
        assert c.get("/public/x").status_code == 503  # ...and only on the route that asked for it
        assert c.get("/emb/x", headers=bob).status_code == 403  # the in-process engine is unaffected
    emb, denied, failed, public, emb_again = proxy.wait_audit(5, timeout=5)
    assert [e["decision"]["engine"] for e in (emb, denied, emb_again)] == ["opa-lib", "opa", "opa-lib"]
    assert denied["reason"] == "dry_run_denied" and denied["outcome"] == "allowed"
    assert denied["decision"]["dry_run"] is True
    assert denied["result"] == {"allowed": False, "reasons": ["user bob may not GET /api/invoices/1"]}
    assert failed["reason"] == "dry_run_denied" and failed["decision"]["dry_run"] is True
    assert failed["decision"]["reasons"] == ["policy_unavailable"]  # the real failure is on record
    assert public["reason"] == "policy_unavailable" and public["decision"]["dry_run"] is False


def test_opa_route_without_opa_settings_is_a_config_error(proxy_config):
    proxy_config["routes"][0]["policy"]["engine"] = "opa"
    with pytest.raises(ConfigError, match=r"routes\[0\]\.policy\.engine: engine 'opa' needs policy\.opa\.url"):
        parse_settings(proxy_config)
    proxy_config["policy"]["opa"] = {"url": "http://127.0.0.1:8181"}
    proxy_config["routes"][0]["policy"]["cache"] = True
    with pytest.raises(ConfigError, match=r"routes\[0\]\.policy\.cache: the decision cache needs"):
        parse_settings(proxy_config)
