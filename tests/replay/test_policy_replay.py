"""`iam-proxy policy replay` on the audit file of a real proxy run, with each engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from replay_support import candidate_policies as _candidate, send_traffic, traffic as _traffic
from support import copy_policies, run_cli


@pytest.fixture
def recorded(proxy, issuer) -> Path:
    _traffic(proxy, issuer)
    return proxy.audit_path


def _replay(*args: str) -> tuple[int, dict]:
    result = run_cli("policy", "replay", "--format", "json", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.parametrize("engine", ["embedded", "opa-lib", "opa"])
def test_replay_reports_each_flip_grouped_with_examples(recorded, tmp_path, engine):
    code, report = _replay("--events", str(recorded), "--policies", str(_candidate(tmp_path)), "--engine", engine)
    assert code == 0
    assert (report["events"], report["replayed"], report["skipped"]) == (6, 5, 1)
    assert report["flips"] == {"total": 2, "allow_to_deny": 1, "deny_to_allow": 1}
    groups = {(g["direction"], g["identity"]): g for g in report["groups"]}
    denied = groups[("allow_to_deny", "dave")]
    assert (denied["route"], denied["rule"], denied["count"]) == ("api", "iam/authz/decision", 1)
    assert denied["reason"] == "user dave may not GET /api/reports/q3"
    assert denied["examples"][0]["live_reasons"] == ["granted by role or group"]
    allowed = groups[("deny_to_allow", "bob")]
    assert allowed["reason"] == "user bob may not GET /api/invoices/1"  # why it was refused before
    assert allowed["examples"][0]["candidate_reasons"] == ["granted by role or group"]
    assert report["by"]["route"] == {"api": 2}


def test_unchanged_policy_replays_every_decision_as_it_was(recorded):
    code, report = _replay("--events", str(recorded), "--policies", "policies", "--max-flips", "0")
    assert code == 0
    assert (report["replayed"], report["unchanged"], report["flips"]["total"]) == (5, 5, 0)


def test_max_flips_fails_the_ci_job(recorded, tmp_path):
    candidate = str(_candidate(tmp_path))
    assert _replay("--events", str(recorded), "--policies", candidate, "--max-flips", "1")[0] == 1
    assert _replay("--events", str(recorded), "--policies", candidate, "--max-flips", "2")[0] == 0
    text = run_cli("policy", "replay", "--events", str(recorded), "--policies", candidate)
    assert "flips: 2 (1 allow->deny, 1 deny->allow)" in text.stdout
    assert "route=api rule=iam/authz/decision identity=dave" in text.stdout


def test_a_policy_reading_a_redacted_credential_cannot_be_replayed(recorded, tmp_path):
    target = copy_policies(tmp_path / "reads-token")
    (target / "iam" / "authz.rego").write_text(
        "package iam.authz\n\nimport rego.v1\n\n"
        "decision := {\"allowed\": startswith(input.attributes.request.http.headers.authorization, \"Bearer \")}\n")
    _, report = _replay("--events", str(recorded), "--policies", str(target))
    assert report["replayed"] == 1  # the public request carried no Authorization header
    assert report["cannot_replay"]["total"] == 4
    assert report["cannot_replay"]["by_cause"] == {"reads_redacted": 4}
    assert report["cannot_replay"]["redacted_fields"] == {"/input/attributes/request/http/headers/authorization": 4}
    events = [json.loads(line) for line in recorded.read_text().splitlines()]
    assert all(e["input_redacted"] == ["/input/attributes/request/http/headers/authorization"]
               for e in events if "input" in e and e["identity"]["method"] == "jwt")


def test_pseudonymized_subject_cannot_be_replayed_by_a_policy_reading_it(proxy_factory, proxy_config, issuer, tmp_path):
    proxy_config["audit"]["sinks"][0]["privacy"] = {
        "rules": [{"field": "subject", "action": "pseudonymize"}], "pseudonym_key": "k" * 32, "include_input": True}
    proxy = proxy_factory(proxy_config)
    _traffic(proxy, issuer)
    _, report = _replay("--events", str(proxy.audit_path), "--policies", "policies")
    # every decision of the shipped policy reads input.identity.sub (to say who was refused)
    assert report["cannot_replay"]["total"] == 5
    assert report["cannot_replay"]["redacted_fields"]["/input/identity/sub"] == 5
    assert report["replayed"] == 0


def test_time_range_and_rotated_copies(recorded, tmp_path):
    copy = tmp_path / "copies"
    copy.mkdir()
    shutil.copy(recorded, copy / "audit.jsonl.1")
    shutil.copy(recorded, copy / "audit.jsonl")  # the same events twice: read once
    assert _replay("--events", str(copy), "--policies", "policies")[1]["events"] == 6
    assert _replay("--events", str(copy), "--policies", "policies", "--since", "1h")[1]["events"] == 6
    assert _replay("--events", str(copy), "--policies", "policies", "--until", "1h")[1]["events"] == 0


def test_bad_arguments_name_the_option(recorded, tmp_path):
    result = run_cli("policy", "replay", "--events", str(tmp_path / "missing"), "--policies", "policies")
    assert result.returncode == 2 and "--events" in result.stderr
    result = run_cli("policy", "replay", "--events", str(recorded), "--policies", "policies", "--since", "yesterday")
    assert result.returncode == 2 and "--since" in result.stderr


def test_the_documented_ci_job(recorded, tmp_path):
    """docs/policy-replay.md: the script fails the job on a flip and keeps the JSON report; the workflow runs it."""
    from snippets import snippet

    workflow = yaml.safe_load(snippet("replay-ci-workflow").text)
    steps = workflow["jobs"]["replay"]["steps"]
    assert {"run": "sh ci/replay.sh", "env": {"MAX_FLIPS": "0"}} in steps
    assert any(s.get("with", {}).get("path") == "replay.json" for s in steps)

    repo = tmp_path / "policy-repo"
    (repo / "ci").mkdir(parents=True)
    (repo / "ci" / "replay.sh").write_text(snippet("replay-ci-script").text)
    (repo / "audit").mkdir()
    shutil.copy(recorded, repo / "audit" / "audit.jsonl")
    shutil.copytree(_candidate(tmp_path), repo / "policies")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def job(max_flips: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "ci/replay.sh"], cwd=repo, env={**env, "MAX_FLIPS": max_flips},
                              capture_output=True, text=True, timeout=120)

    failed = job("0")
    assert failed.returncode == 1, failed.stderr
    assert "flips: 2 (1 allow->deny, 1 deny->allow)" in failed.stdout
    assert json.loads((repo / "replay.json").read_text())["flips"]["total"] == 2
    assert job("2").returncode == 0


def test_replay_from_the_spool_of_an_undelivered_sink(proxy_factory, proxy_config, issuer, tmp_path):
    """A webhook collector that is down keeps the events in the spool's segments: replay reads them."""
    from support import free_port

    proxy_config["audit"] = {"spool": {"dir": str(tmp_path / "spool")}, "sinks": [
        {"type": "http", "kind": "webhook", "url": f"http://127.0.0.1:{free_port()}/events"}]}
    proxy = proxy_factory(proxy_config)
    assert send_traffic(proxy, issuer) == [200, 403, 403, 200, 200, 401]
    segments = list((tmp_path / "spool").rglob("*.seg"))
    assert segments
    code, report = _replay("--events", str(segments[0].parent), "--policies", str(_candidate(tmp_path)))
    assert (report["events"], report["replayed"], report["flips"]["total"]) == (6, 5, 2)



@pytest.mark.parametrize("engine", ["embedded", "opa"])
def test_replay_against_a_bundle(recorded, tmp_path, engine):
    import io
    import tarfile

    source = _candidate(tmp_path)
    bundle = tmp_path / "candidate.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        manifest = b'{"revision": "next-42", "roots": [""]}'
        info = tarfile.TarInfo(".manifest")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for path in sorted(source.rglob("*")):
            if path.is_file() and not path.name.endswith("_test.rego"):
                tar.add(path, arcname=str(path.relative_to(source)))
    _, report = _replay("--events", str(recorded), "--policies", str(bundle), "--engine", engine)
    assert report["candidate"]["revision"] == "next-42"
    assert report["flips"] == {"total": 2, "allow_to_deny": 1, "deny_to_allow": 1}



def test_an_engine_that_does_not_answer_is_an_error_not_a_report(recorded):
    from support import free_port

    result = run_cli("policy", "replay", "--events", str(recorded), "--policies", "policies", "--engine", "opa",
                     "--opa-url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "the candidate engine did not answer (policy_unavailable)" in result.stderr
    assert result.stdout == ""
