"""The blocks of docs/policies.md and docs/policy-engines.md, run as written: config fragments through
the real settings parser, Rego with the real OPA (`opa eval`, `opa test`) and the embedded engine,
excerpts of policies/ checked to be in the shipped files verbatim, and the commands (`iam-proxy policy
test`, `check`, `explain`, `opa run`, `opa build`) run against the repository's own files.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from iam_proxy.core.errors import ConfigError
from iam_proxy.policy.bundle import BundleSource
from iam_proxy.policy.embedded import EmbeddedEngine
from iam_proxy.policy.engine import UndefinedDecision
from iam_proxy.policy.source import load_source
from iam_proxy.settings import parse_settings
from snippets import all_snippets, snippet
from support import PYTHON, REPO, ProxyProcess, free_port, opa_binary

BIN = Path(PYTHON).parent
BEARER = {"authenticators": {"bearer": {"type": "anonymous"}},  # the minimal base a fragment loads over
          "routes": [{"id": "base", "match": {"path": "/zz-base/**"}, "upstream": "http://127.0.0.1:9",
                      "authenticators": ["bearer"]}]}


def shell_env(**extra: str) -> dict[str, str]:
    """PATH with the venv's `iam-proxy` and the pinned `opa` first, as after `make venv peers`."""
    path = f"{BIN}{os.pathsep}{Path(opa_binary()).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, **extra}


def sh(command: str, cwd: Path = REPO, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=shell_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def commands(name: str) -> list[str]:
    """The block's commands, one per entry (backslash continuations joined)."""
    return [c.strip() for c in snippet(name).text.replace("\\\n", " ").splitlines() if c.strip()]


def opa_eval(directory: Path, query: str, input_doc: Any) -> Any:
    proc = subprocess.run([opa_binary(), "eval", "--format", "json", "-d", str(directory), "--stdin-input", query],
                          input=json.dumps(input_doc), capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(proc.stdout).get("result")
    return result[0]["expressions"][0]["value"] if result else None


def embedded(directory: Path, path: str, input_doc: Any) -> Any:
    engine = EmbeddedEngine(None, [path], source=load_source(directory))
    try:
        return asyncio.run(engine.decide(path, input_doc)).value
    except UndefinedDecision:
        return None


def request(method: str, path: str, sub: str, groups: list[str], **identity: Any) -> dict[str, Any]:
    parsed = [p for p in path.split("?")[0].split("/") if p]
    return {"attributes": {"request": {"http": {"method": method, "path": path, "headers": {}}}},
            "parsed_path": parsed, "route": {"id": "api", "labels": {}},
            "identity": {"sub": sub, "groups": groups, "roles": [], "tenant": None, **identity}}


def shipped_text(relative: str) -> str:
    return (REPO / "policies" / relative).read_text()


# ---------------------------------------------------------------- policies.md: the shipped policies


def test_the_layout_lists_the_shipped_policy_files():
    listed = [line.split("#")[0].strip() for line in snippet("policies-layout").text.splitlines()[1:]]
    shipped = sorted(str(p.relative_to(REPO / "policies")) for p in (REPO / "policies").rglob("*") if p.is_file())
    assert sorted(x for x in listed if x) == shipped


@pytest.mark.parametrize(("name", "file"), [("rbac-rego", "rbac/rbac.rego"), ("abac-rego", "abac/abac.rego"),
                                            ("iam-authz-rego", "iam/authz.rego"),
                                            ("envoy-authz-rego", "envoy/authz.rego")])
def test_policy_excerpts_are_the_shipped_files(name, file):
    text = snippet(name).text
    assert text in shipped_text(file)
    assert text.startswith("package ")


def test_the_rbac_data_is_the_shipped_data():
    assert json.loads(snippet("rbac-data").text) == json.loads((REPO / "policies/rbac/data.json").read_text())


@pytest.fixture(scope="module")
def snippet_policies(tmp_path_factory) -> Path:
    """The quick start policy directory rebuilt from the blocks alone."""
    root = tmp_path_factory.mktemp("from-docs")
    for name, file in [("rbac-rego", "rbac/rbac.rego"), ("abac-rego", "abac/abac.rego"),
                       ("iam-authz-rego", "iam/authz.rego"), ("rbac-data", "rbac/data.json")]:
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        (root / file).write_text(snippet(name).text)
    return root


def test_the_shipped_policies_pass_opa_check():
    proc = subprocess.run([opa_binary(), "check", str(REPO / "policies")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("decide", ["opa", "embedded"])
def test_the_blocks_decide_as_the_text_says(snippet_policies, decide):
    def ask(path: str, doc: dict[str, Any]) -> Any:
        if decide == "opa":
            return opa_eval(snippet_policies, "data." + path.replace("/", "."), doc)
        return embedded(snippet_policies, path, doc)

    # RBAC: `**` spans segments, and does not match /api/invoices-archive/1
    assert ask("rbac/allow", request("GET", "/api/invoices/1?expand=lines", "alice", ["finance"])) is True
    assert ask("rbac/allow", request("GET", "/api/invoices-archive/1", "alice", ["finance"])) in (None, False)
    # ABAC: the owner reads her profile; a tenant member reads, writes only with tenant-admin
    assert ask("abac/allow", request("PUT", "/api/profiles/alice", "alice", [])) is True
    assert ask("abac/allow", request("GET", "/api/tenants/acme/x", "u", [], tenant="acme")) is True
    assert ask("abac/allow", request("POST", "/api/tenants/acme/x", "u", [], tenant="acme")) in (None, False)
    assert ask("abac/allow", request("POST", "/api/tenants/acme/x", "u", [], tenant="acme",
                                     roles=["tenant-admin"])) is True
    # the decision: public first, then RBAC, then ABAC, and a denial that explains itself (the 403 shown)
    public = request("GET", "/public/x", "anonymous", [])
    public["route"]["labels"] = {"access": "public"}
    assert ask("iam/authz/decision", public) == {"allowed": True, "reasons": ["public route"]}
    assert ask("iam/authz/decision", request("GET", "/api/invoices/1", "alice", ["finance"])) == \
        {"allowed": True, "reasons": ["granted by role or group"]}
    assert ask("iam/authz/decision", request("GET", "/api/profiles/carol", "carol", [])) == \
        {"allowed": True, "reasons": ["caller owns the resource"]}
    assert ask("iam/authz/decision", request("GET", "/api/invoices/1", "bob", ["sales"])) == \
        {"allowed": False, "reasons": ["user bob may not GET /api/invoices/1"]}


@pytest.mark.parametrize("decide", ["opa", "embedded"])
def test_the_envoy_policy_decides_as_the_plugin_tutorial(tmp_path, decide):
    (tmp_path / "authz.rego").write_text(snippet("envoy-authz-rego").text)
    token = sh("iam-proxy token --sub alice", timeout=60).stdout.strip()

    def ask(path: str) -> Any:
        doc = request("GET", path, "alice", [])
        doc["attributes"]["request"]["http"]["headers"] = {"authorization": f"Bearer {token}"}
        if decide == "opa":
            return opa_eval(tmp_path, "data.envoy.authz.allow", doc)
        return embedded(tmp_path, "envoy/authz/allow", doc)

    assert (ask("/envoy/status"), ask("/envoy/people/alice"), ask("/envoy/people/bob")) == (True, True, False)


def test_the_test_block_passes_under_opa_test(snippet_policies, tmp_path):
    root = tmp_path / "p"
    for file in ("rbac/rbac.rego", "rbac/data.json"):
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        (root / file).write_text((snippet_policies / file).read_text())
    (root / "rbac/rbac_test.rego").write_text(snippet("rbac-test-rego").text)
    proc = subprocess.run([opa_binary(), "test", "-v", str(root)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_finance_reads_invoices: PASS" in proc.stdout and "test_sales_denied: PASS" in proc.stdout
    # and every paragraph of the block (the package, imports, helpers, two tests) is in the shipped file
    shipped = (REPO / "policies/rbac/rbac_test.rego").read_text()
    assert all(part.strip() in shipped for part in snippet("rbac-test-rego").text.split("\n\n"))


def test_the_policy_test_commands_run():
    for command in commands("policy-test-run"):
        proc = sh(command, timeout=600)
        if "--engine embedded" in command:
            # rego-cpp crashes on the shipped tests' `with input as` (as the text says): each one is reported
            # as an ERROR naming the crash, none is a silent pass or a wrong FAIL, and the run exits 1
            results = [line for line in proc.stdout.splitlines() if line.startswith("policies/")]
            assert proc.returncode == 1 and results, proc.stdout + proc.stderr
            assert all(": PASS" in line or "ERROR (the embedded engine crashed" in line for line in results), \
                proc.stdout
            continue
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        if " -v " in command:
            assert "test_finance_reads_invoices" in proc.stdout


def test_the_check_command_passes_on_the_quick_start():
    proc = sh(snippet("policy-check-quickstart").text)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_explain_command_denies_bob_with_the_reason_shown():
    proc = sh(snippet("policy-explain-quickstart").text, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "user bob may not GET /api/invoices/1" in proc.stdout


def test_a_denied_client_sees_the_403_shown_and_the_decision_is_logged_as_shown(tmp_path):
    """The output blocks of the 403 (policies.md) and of a decision log line (policy-engines.md): the real
    proxy on the quick start config denies bob."""
    [shown] = [s for s in all_snippets() if s.doc == "policies.md" and s.output and "403 Forbidden" in s.text]
    assert "content-type: application/problem+json" in shown.text
    config = yaml.safe_load((REPO / "examples/quickstart.yaml").read_text())
    config["listeners"] = {"proxy": {"host": "127.0.0.1", "port": free_port()},
                           "admin": {"host": "127.0.0.1", "port": free_port()}}
    config["audit"]["sinks"] = [{"type": "file", "path": str(tmp_path / "audit.jsonl")}]
    config["policy"]["decision_log"] = {"path": str(tmp_path / "decisions.jsonl")}
    token = sh("iam-proxy token --sub bob --group sales", timeout=60).stdout.strip()
    proxy = ProxyProcess(config, tmp_path, env={**os.environ, "UPSTREAM_URL": "http://127.0.0.1:9"}).wait_ready()
    try:
        response = httpx.get(f"{proxy.url}/api/invoices/1", headers={"Authorization": f"Bearer {token}"})
    finally:
        proxy.process.stop()
    assert response.status_code == 403 and response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["reason"], body["reasons"]) == ("policy_denied", ["user bob may not GET /api/invoices/1"])
    assert body["error_id"]
    # policy-engines.md's decision log event (an output block): the same fields, the credential masked
    [logged] = [s for s in all_snippets() if s.doc == "policy-engines.md" and s.output and '"decision_id"' in s.text]
    logged = json.loads(logged.text)
    deadline = time.monotonic() + 10
    while not (tmp_path / "decisions.jsonl").exists() or not (tmp_path / "decisions.jsonl").read_text().strip():
        assert time.monotonic() < deadline, "no decision log line"
        time.sleep(0.1)
    event = json.loads((tmp_path / "decisions.jsonl").read_text().splitlines()[0])
    assert set(event) == set(logged) and set(event["custom"]) == set(logged["custom"])
    assert event["input"]["attributes"]["request"]["http"]["headers"]["authorization"] == "Bearer ***"
    assert event["masked"] == logged["masked"] and event["path"] == logged["path"]


def test_the_routes_load():
    settings = parse_settings({**BEARER, **yaml.safe_load(snippet("policies-routes").text)})
    assert [(r.id, r.policy.path) for r in settings.routes] == \
        [("api", "iam/authz/decision"), ("envoy-compat", "envoy/authz/allow")]


def test_the_differential_case_agrees_in_both_engines(tmp_path):
    [case] = yaml.safe_load(snippet("differential-case").text)
    for name, text in case["modules"].items():
        (tmp_path / name).write_text(text)
    for name, document in case["data"].items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(json.dumps(document))
    query = "data." + case["path"].replace("/", ".")
    for item in case["inputs"]:
        assert opa_eval(tmp_path, query, item["input"]) == item["expect"], item["name"]
        assert embedded(tmp_path, case["path"], item["input"]) == item["expect"], item["name"]


def _shape(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        return {prefix} | {p for k, v in value.items() for p in _shape(v, f"{prefix}/{k}")}
    return {prefix}


def test_the_input_document_shown_is_what_explain_reports():
    """The output block "the real input of GET /api/invoices/1?expand=lines ... for alice": every field
    the proxy builds is shown, none that it does not, with the same values where they are not per request."""
    [shown] = [s for s in all_snippets() if s.doc == "policies.md" and s.output and s.lang == "json"
               and '"parsed_path"' in s.text]
    shown = json.loads(shown.text)
    proc = sh("iam-proxy explain --config examples/quickstart.yaml"
              " --url 'http://127.0.0.1:8080/api/invoices/1?expand=lines'"
              " --token \"$(iam-proxy token --sub alice --group finance)\" --json", timeout=120)
    real = json.loads(proc.stdout)["input"]
    assert _shape(real) == _shape(shown)
    per_request = {"time", "id", "expires_at", "issued_at", "authorization"}

    def same(a: Any, b: Any, key: str = "") -> None:
        if isinstance(a, dict):
            for k in a:
                same(a[k], b[k], k)
        elif key not in per_request:
            assert a == b, key

    same(real, shown)
    assert shown["identity"]["expires_at"] - shown["identity"]["issued_at"] == \
        real["identity"]["expires_at"] - real["identity"]["issued_at"]


# ---------------------------------------------------------------- policy-engines.md


def test_the_engine_config_loads_and_opa_needs_a_url():
    fragment = yaml.safe_load(snippet("engines-config").text)
    settings = parse_settings({**BEARER, **fragment})
    assert settings.policy.engine == "auto" and str(settings.policy.opa.url).startswith("http://127.0.0.1:8181")
    assert [settings.engine_for(r) for r in settings.routes] == ["opa-lib", "opa"]  # make test builds opa-lib
    del fragment["policy"]["opa"]
    with pytest.raises(ConfigError, match=re.escape("routes[1].policy.engine: engine 'opa' needs policy.opa.url")):
        parse_settings({**BEARER, **fragment})


def test_opa_run_serves_the_policies():
    [command] = commands("engines-opa-run")
    assert "127.0.0.1:8181" in command
    port = free_port()  # the documented port, moved so a running OPA cannot clash
    proc = subprocess.Popen(["bash", "-c", "exec " + command.replace("127.0.0.1:8181", f"127.0.0.1:{port}")],
                            cwd=REPO, env=shell_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "opa run did not come up"
            time.sleep(0.1)
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/data/iam/authz/decision",
                            json={"input": request("GET", "/api/invoices/1", "alice", ["finance"])}).json()
        assert answer["result"] == {"allowed": True, "reasons": ["granted by role or group"]}
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_decision_cache_config_loads():
    fragment = yaml.safe_load(snippet("decision-cache-config").text)
    [route] = fragment["routes"]
    route.update({"match": {"path": "/api/invoices/**"}, "upstream": "http://127.0.0.1:9000",
                  "authenticators": ["bearer"]})  # what the block's `# ...` leaves out
    settings = parse_settings({**BEARER, **fragment})
    cache = settings.policy.cache
    assert (cache.max_entries, cache.ttl_seconds) == (10000, 10)
    assert "traceparent" in cache.volatile_headers and "x-amzn-trace-id" in cache.volatile_headers
    assert settings.routes[0].policy.cache is False


def _keypair(directory: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    (directory / "bundle-signing.key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / "bundle-signing.pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def test_a_bundle_built_as_shown_loads_with_the_file_config(tmp_path):
    _keypair(tmp_path)
    (tmp_path / "policies").symlink_to(REPO / "policies")
    git_dir = subprocess.run(["git", "rev-parse", "--absolute-git-dir"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
    proc = sh(snippet("bundle-build").text, cwd=tmp_path, GIT_DIR=git_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    settings = parse_settings({**BEARER, **yaml.safe_load(
        snippet("bundle-file-config").text.replace("/etc/iam-proxy/", f"{tmp_path}/"))})
    bundle = BundleSource(settings.policy.bundle).fetch()
    assert bundle is not None and bundle.signed and bundle.revision == revision
    assert "policies/iam/authz.rego" in bundle.source.modules  # OPA names files by the path given
    assert not any(name.endswith("_test.rego") for name in bundle.source.modules)
    assert bundle.source.data["rbac"]["permissions"]["finance"][0]["path"] == "/api/invoices/**"
    engine = EmbeddedEngine(None, ["iam/authz/decision"], source=bundle.source)
    decision = asyncio.run(engine.decide("iam/authz/decision", request("GET", "/api/invoices/1", "alice", ["finance"])))
    assert decision.value == {"allowed": True, "reasons": ["granted by role or group"]}


def test_the_bundle_url_config_loads(tmp_path):
    _keypair(tmp_path)
    settings = parse_settings({**BEARER, **yaml.safe_load(
        snippet("bundle-url-config").text.replace("/etc/iam-proxy/", f"{tmp_path}/"))})
    bundle = settings.policy.bundle
    assert (bundle.poll_interval_seconds, bundle.timeout_seconds, bundle.verification.algorithm) == (30, 10, "ES256")


def test_the_decision_log_config_loads():
    settings = parse_settings({**BEARER, **yaml.safe_load(snippet("decision-log-config").text)})
    assert str(settings.policy.decision_log.path) == "/var/log/iam-proxy/decisions.jsonl"


@pytest.fixture
def explain_dir(tmp_path) -> Path:
    """config.yaml: the engine block's config, with the quick start's issuer and policies."""
    config = yaml.safe_load(snippet("engines-config").text)
    config["policy"]["dir"] = str(REPO / "policies")
    config["identity_providers"] = [{"id": "dev", "issuer": "https://dev-idp.iam-proxy.localhost",
                                     "jwks_file": str(REPO / "certs/dev-jwks.json"), "audiences": ["iam-proxy"],
                                     "algorithms": ["RS256"]}]
    config["authenticators"] = {"bearer": {"type": "jwt", "providers": ["dev"]}}
    config["identity_headers"] = {"assertion": {"key_file": str(REPO / "certs/assertion-key.pem")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "certs").symlink_to(REPO / "certs")  # `iam-proxy token` signs with certs/dev-idp-key.pem
    return tmp_path


def test_the_explain_commands_run(explain_dir):
    allowed, denied, as_json = commands("explain-commands")
    proc = sh(allowed, cwd=explain_dir, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "request:   GET https://api.example.com/api/invoices/7" in proc.stdout
    assert "route:     invoices -> http://127.0.0.1:9000  (policy iam/authz/decision on engine opa-lib)" in proc.stdout
    assert "reason: granted by role or group" in proc.stdout
    # the output block after the commands is this report, abbreviated: each line it shows is there
    [shown] = [s for s in all_snippets() if s.doc == "policy-engines.md" and s.output and "request:" in s.text]
    size = re.compile(r"JWT \d+ bytes")  # the assertion's size depends on the request
    for line in shown.text.splitlines():
        if "..." not in line and line.strip():
            assert size.sub("JWT n bytes", line.split(", revision")[0]) in size.sub("JWT n bytes", proc.stdout), line
    proc = sh(denied, cwd=explain_dir, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "user bob may not DELETE /api/invoices/7" in proc.stdout
    proc = sh(as_json, cwd=explain_dir, timeout=120)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    json.loads(proc.stdout)


def test_the_latency_bench_takes_the_options_shown():
    [command] = commands("decision-latency-run")
    assert command == ".venv/bin/python bench/decision_latency.py --n 5000"
    proc = subprocess.run([PYTHON, str(REPO / "bench/decision_latency.py"), "--help"], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0 and "--n N" in proc.stdout
