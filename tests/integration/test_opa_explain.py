"""`iam-proxy explain`: route, identity, exact policy input, decision and upstream headers for one
request, with either engine (the real OPA for `opa`), forwarding nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from iam_proxy.core.errors import ConfigError
from iam_proxy.explain import explain, identity_from_json, render_text
from iam_proxy.settings import load_settings
from support import REPO, opa_binary, run_cli


@pytest.fixture
def config_file(proxy_config: dict, tmp_path: Path) -> Path:
    # the upstream is never contacted: a closed port proves nothing is forwarded
    for route in proxy_config["routes"]:
        route["upstream"] = "http://127.0.0.1:9"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(proxy_config))
    return path


def _explain(config: Path, *args: str):
    return run_cli("explain", "--config", str(config), *args)


def _report(config: Path, url: str, headers: list[tuple[str, str]], method: str = "GET", identity=None) -> dict:
    return asyncio.run(explain(load_settings(config), method, url, headers, identity))


def test_explain_with_a_token_shows_every_stage_and_masks_credentials(config_file, issuer, tmp_path):
    token = issuer.token("alice", ["finance"])
    report = _report(config_file, "http://api.example/api/invoices/7?access_token=qs-secret",
                     [("authorization", f"Bearer {token}"), ("X-Forwarded-User", "mallory")])
    assert report["route"]["id"] == "api" and report["route"]["engine"] == "opa-lib"
    assert report["identity"]["sub"] == "alice" and report["identity"]["groups"] == ["finance"]
    http = report["input"]["attributes"]["request"]["http"]
    assert http["method"] == "GET" and http["host"] == "api.example"
    assert http["headers"]["authorization"] == "Bearer ***"
    assert report["input"]["parsed_path"] == ["api", "invoices", "7"]
    assert report["input"]["identity"]["sub"] == "alice"
    assert report["decision"] == {"allowed": True, "reasons": ["granted by role or group"],
                                  "result": {"allowed": True, "reasons": ["granted by role or group"]},
                                  "engine": "opa-lib", "revision": report["decision"]["revision"], "cached": False}
    headers = dict((k.lower(), v) for k, v in report["upstream"]["headers"])
    assert report["upstream"]["url"] == "http://127.0.0.1:9/api/invoices/7?access_token=***"  # masked (--show-secrets shows it)
    assert [v for k, v in report["upstream"]["headers"] if k.lower() == "x-forwarded-user"] == ["alice"]
    assert headers["x-iam-assertion"].startswith("<signed JWT")
    rendered = json.dumps(report)
    assert token not in rendered and "qs-secret" not in json.dumps(report["input"])

    text = render_text(report)
    for needle in ("route:     api -> http://127.0.0.1:9", "identity:  alice via jwt", "input:",
                   "decision:  ALLOW", "reason: granted by role or group",
                   "upstream:  http://127.0.0.1:9/api/invoices/7", "X-Forwarded-User: alice"):
        assert needle in text, needle


def test_explain_with_an_identity_and_the_real_opa_engine(config_file, opa_factory, tmp_path):
    """OPA serves a bundle it verified itself; its revision reaches the proxy's decision."""
    subprocess.run([opa_binary(), "build", "--bundle", ".", "-r", "rev-9", "-o", str(tmp_path / "iam.tar.gz")],
                   cwd=REPO / "policies", check=True, capture_output=True, timeout=60)
    opa = opa_factory([tmp_path / "iam.tar.gz"], extra=["--bundle"])
    config = yaml.safe_load(config_file.read_text())
    config["policy"]["opa"] = {"url": opa.url}
    config["routes"][0]["policy"]["engine"] = "opa"
    config_file.write_text(yaml.safe_dump(config))
    identity = tmp_path / "bob.json"
    identity.write_text(json.dumps({"sub": "bob", "groups": ["sales"], "email": "bob@example.org"}))
    result = _explain(config_file, "-X", "DELETE", "--url", "http://x/api/invoices/7", "--identity", f"@{identity}")
    assert result.returncode == 1
    assert "engine opa" in result.stdout
    decision_line = next(line for line in result.stdout.splitlines() if line.startswith("decision:"))
    assert decision_line.startswith("decision:  DENY (HTTP 403)  engine opa, revision "), decision_line
    assert decision_line.endswith("iam.tar.gz:rev-9"), decision_line  # OPA names a bundle by its path
    assert "reason: user bob may not DELETE /api/invoices/7" in result.stdout
    assert "upstream:  nothing is forwarded" in result.stdout


def test_explain_reports_no_route_bad_token_and_bad_identity(config_file):
    no_route = render_text(_report(config_file, "http://x/elsewhere", []))
    assert "route:     NONE (no_route, HTTP 404" in no_route

    bad = render_text(_report(config_file, "http://x/api/invoices/1", [("authorization", "Bearer not.a.jwt")]))
    assert "identity:  REJECTED (" in bad and "nothing" not in bad

    with pytest.raises(ConfigError, match=r"unknown fields \['grups'\]"):
        identity_from_json('{"sub": "a", "grups": []}')
