"""Credentials in logs (issue 13 item 8): a token in a configured custom header, in a cookie, or in
a query parameter, including inside the X-Original-URI a front proxy sends, never appears in the
audit file (native and ECS), the decision log, the proxy's log or `explain`'s report.
"""

from __future__ import annotations

import logging

import pytest

from rawhttp import request_bytes, send_raw
from support import DevIssuer, ProxyProcess, audit_event, base_config, copy_policies, run_cli

from iam_proxy.core.redaction import RedactingFilter, mask_text


@pytest.fixture(scope="module")
def masked(upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("masking")
    issuer = DevIssuer(tmp / "issuer")
    config = base_config(upstream, issuer.jwks_path, tmp / "audit.jsonl", copy_policies(tmp / "policies"))
    config["audit"]["sinks"].append({"type": "file", "path": str(tmp / "audit-ecs.jsonl"), "format": "ecs"})
    config["policy"]["decision_log"] = {"path": str(tmp / "decisions.jsonl")}
    config["forward_auth"] = {"trusted_peers": ["127.0.0.1/32"]}
    config["authenticators"]["partner"] = {"type": "jwt", "providers": ["dev"], "header": "x-partner-token"}
    config["routes"].append({"id": "partner", "match": {"path": "/partner/**"}, "upstream": upstream,
                             "authenticators": ["partner"], "labels": {"access": "public"}})
    proxy = ProxyProcess(config, tmp).wait_ready()
    proxy.issuer = issuer
    proxy.tmp = tmp
    yield proxy
    proxy.stop()


def _everything_written(proxy) -> str:
    files = ["audit.jsonl", "audit-ecs.jsonl", "decisions.jsonl"]
    return "\n".join((proxy.tmp / name).read_text() for name in files) + proxy.process.logs()


def test_a_token_in_the_forward_auth_uri_is_masked_everywhere(masked):
    token = masked.issuer.token("alice", ["finance"])
    r = send_raw(masked.port, request_bytes("GET", "/.iam/auth", [
        ("X-Original-URI", f"/public/x?page=2&access_token={token}"), ("X-Request-Id", "fa-token")]))
    assert r.status == 200
    event = audit_event(masked, "fa-token")
    headers = event["input"]["attributes"]["request"]["http"]["headers"]
    assert headers["x-original-uri"] == "/public/x?page=2&access_token=***"
    assert event["input"]["attributes"]["request"]["http"]["path"] == "/public/x?page=2&access_token=***"
    assert token not in _everything_written(masked)
    assert token.split(".")[2] not in _everything_written(masked)


def test_a_token_in_a_configured_custom_header_and_cookies_are_masked(masked):
    token = masked.issuer.token("alice", ["finance"])
    r = send_raw(masked.port, request_bytes("GET", "/partner/x", [
        ("X-Partner-Token", f"Bearer {token}"), ("Cookie", "sid=s3cr3t-cookie-value"), ("X-Request-Id", "custom")]))
    assert r.status == 200
    headers = audit_event(masked, "custom")["input"]["attributes"]["request"]["http"]["headers"]
    assert headers["x-partner-token"] == "***"
    assert headers["cookie"] == "***"
    written = _everything_written(masked)
    assert token not in written and "s3cr3t-cookie-value" not in written


def test_explain_masks_the_same_credentials(masked):
    token = masked.issuer.token("alice", ["finance"])
    result = run_cli("explain", "--config", str(masked.config_path), "--url",
                     f"http://proxy.test/partner/x?access_token={token}", "-H", f"X-Partner-Token: Bearer {token}",
                     "-H", "X-Forwarded-Uri: /a?id_token=" + token)
    assert result.returncode == 0, result.stderr
    assert "partner" in result.stdout
    assert token not in result.stdout + result.stderr


def test_log_records_are_masked_and_saml_documents_withheld():
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"
    assert token not in mask_text(f"GET /x?access_token=abc&b=1 Authorization: Bearer {token}")
    assert "access_token=***" in mask_text("GET /x?access_token=abc&b=1")
    record = logging.LogRecord("saml2.sigver", logging.ERROR, __file__, 1, "transform failed: %s",
                               ('<samlp:Response><saml:Assertion><saml:NameID>alice@example.org</saml:NameID>',),
                               None)
    assert RedactingFilter().filter(record)
    assert "alice@example.org" not in record.getMessage() and "withheld" in record.getMessage()
