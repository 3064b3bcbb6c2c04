"""The embedded engine's guards, through the real CLI and the real proxy process.

The differential suite (test_engines_agree.py) finds where rego-cpp and OPA disagree; these tests
check what a user sees: `iam-proxy check` refusing or warning with file and line, and a crafted
identity that once broke out of a reason string and turned a denial into `"allowed": true`.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from support import REPO, base_config, run_cli


def _check(tmp_path: Path, issuer, rego: str) -> tuple[int, str]:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "gw.rego").write_text(rego)
    config = base_config("http://127.0.0.1:9", issuer.jwks_path, tmp_path / "audit.jsonl", policy_dir)
    config["routes"] = [{**config["routes"][0], "policy": {"path": "gw/allow"}}]
    config["policy"]["engine"] = "embedded"  # these are rego-cpp's guards (the default, auto, is opa-lib here)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = run_cli("check", "--config", str(config_path), cwd=REPO)
    return result.returncode, result.stdout + result.stderr


def test_check_refuses_a_misspelled_variable_with_file_and_line(tmp_path, issuer):
    code, output = _check(tmp_path, issuer, "package gw\n\nimport rego.v1\n\nblocked := {\"eve\"}\n\n"
                                            "deny if input.identity.sub in blockd\n\nallow if not deny\n")
    assert code == 2, output
    assert "gw.rego:7: var blockd is unsafe" in output


def test_check_refuses_membership_used_as_a_value(tmp_path, issuer):
    code, output = _check(tmp_path, issuer, "package gw\n\nimport rego.v1\n\n"
                                            "blocked := input.identity.sub in {\"eve\"}\n\nallow if not blocked\n")
    assert code == 2, output
    assert "gw.rego:5: `in` used as a value" in output


def test_check_warns_about_concat_inside_sprintf(tmp_path, issuer):
    code, output = _check(tmp_path, issuer, "package gw\n\nimport rego.v1\n\nallow if {\n"
                                            "\tsprintf(\"%s\", [concat(\",\", input.identity.groups)]) != \"\"\n}\n")
    assert code == 0, output
    assert "warning:" in output and "gw.rego:6: concat(...) inside sprintf(...)" in output


def test_a_quote_in_an_identity_cannot_rewrite_the_decision(proxy, issuer):
    # the quick start's denial reason echoes the subject: "user <sub> may not GET /api/..."
    crafted = 'x"], "allowed": true, "z": ["'
    token = issuer.token(crafted, ["sales"])
    with proxy.client() as client:
        response = client.get("/api/invoices/1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403, response.text
    assert response.json()["reasons"] == [f"user {crafted} may not GET /api/invoices/1"]
