"""deploy/helm/iam-proxy rendered by the real `helm template` and checked by `kubeconform -strict`
against the Kubernetes 1.37 JSON schemas (shipped in the kubernetes-validate package, made standalone
here: kubeconform does not follow their shared definitions file). A broken manifest must fail the
check; the config the chart renders must load in iam-proxy; the docs' commands run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from snippets import snippet

from iam_proxy.settings import parse_settings
from support import REPO

CHART = REPO / "deploy" / "helm" / "iam-proxy"
TOOLS = Path(os.environ.get("IAM_PROXY_TOOLS") or Path.home() / ".cache" / "iam-proxy") / "bin"
SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / "v1.37.0-local-strict"


def tool(name: str) -> str:
    path = TOOLS / name
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{name} not found at {path}: run scripts/install-peers.sh (make peers)")
    return str(path)


def run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chart") / "assertion-key.pem"
    run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path))
    return path


def render(key: Path, *sets: str) -> str:
    args = [tool("helm"), "template", "iam", str(CHART), "--set-file", f"secrets.assertion-key\\.pem={key}"]
    for value in sets:
        args += ["--set", value]
    done = run(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def schema_name(document: dict) -> str:
    """kubeconform's file name for a kind: deployment-apps-v1, service-v1, networkpolicy-networking-v1."""
    group, _, version = document["apiVersion"].rpartition("/")
    return "-".join(p for p in (document["kind"].lower(), group.split(".")[0], version) if p)


def standalone(names: set[str], target: Path) -> Path:
    """Each schema with the definitions it reaches inlined (their `$ref`s point at one shared file)."""
    definitions = json.loads((SCHEMAS / "_definitions.json").read_text())["$defs"]
    for name in names:
        text = (SCHEMAS / f"{name}.json").read_text().replace('"/api/_definitions.json#', '"#')
        schema = json.loads(text)
        needed, todo = {}, set(re.findall(r'"#/\$defs/([^"]+)"', text))
        while todo:
            ref = todo.pop()
            if ref not in needed:
                needed[ref] = definitions[ref]
                todo |= set(re.findall(r'"#/\$defs/([^"]+)"', json.dumps(needed[ref])))
        schema["$defs"] = needed
        schema.pop("$id", None)
        (target / f"{name}.json").write_text(json.dumps(schema))
    return target


def kubeconform(manifests: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    documents = [d for d in yaml.safe_load_all(manifests) if d]
    schemas = standalone({schema_name(d) for d in documents}, tmp)
    path = tmp / "manifests.yaml"
    path.write_text(manifests)
    return run(tool("kubeconform"), "-strict", "-summary", "-output", "json",
               "-schema-location", f"{schemas}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json", str(path))


def documents(manifests: str) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(manifests) if d}


def assert_valid(manifests: str, tmp: Path) -> dict:
    done = kubeconform(manifests, tmp)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["summary"]["invalid"] == report["summary"]["errors"] == 0, done.stdout
    return report["summary"]


def test_the_chart_lints():
    done = run(tool("helm"), "lint", str(CHART), "--set", "existingSecret=iam-keys")
    assert done.returncode == 0, done.stdout + done.stderr


def test_default_rendering_validates_against_the_kubernetes_schemas(key, tmp_path):
    manifests = render(key)
    summary = assert_valid(manifests, tmp_path)
    kinds = {kind for kind, _ in documents(manifests)}
    assert kinds == {"ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "NetworkPolicy"}
    assert summary["valid"] == len(documents(manifests))

    pod = documents(manifests)[("Deployment", "iam-iam-proxy")]["spec"]["template"]["spec"]
    proxy = pod["containers"][0]
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert proxy["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert proxy["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}


def test_opa_sidecar_and_redis_render_valid_and_the_config_loads(key, tmp_path):
    manifests = render(key, "opa.enabled=true", "redis.enabled=true", "autoscaling.enabled=false")
    assert_valid(manifests, tmp_path)
    found = documents(manifests)
    pod = found[("Deployment", "iam-iam-proxy")]["spec"]
    assert pod["replicas"] == 2 and [c["name"] for c in pod["template"]["spec"]["containers"]] == ["iam-proxy", "opa"]
    assert ("Deployment", "iam-iam-proxy-redis") in found and ("Service", "iam-iam-proxy-redis") in found
    assert ("HorizontalPodAutoscaler", "iam-iam-proxy") not in found

    # the rendered config is one iam-proxy accepts, wired to the sidecar and the chart's Redis
    settings = parse_settings(yaml.safe_load(found[("ConfigMap", "iam-iam-proxy")]["data"]["config.yaml"]))
    assert settings.policy.engine == "opa" and settings.policy.opa.url == "http://127.0.0.1:8181"
    assert settings.rate_limits.store == "redis"
    assert settings.rate_limits.redis.url == "redis://iam-iam-proxy-redis:6379/0"
    assert (settings.listeners.proxy.port, settings.listeners.admin.port) == (8080, 9090)
    assert settings.sessions is None or settings.sessions.redis is None  # no sessions section: none added


def test_the_charts_redis_holds_the_sessions_state_of_every_replica(key, tmp_path):
    manifests = render(key, "redis.enabled=true", "config.sessions.secret=" + "s" * 40,
                       "config.sessions.store=redis")
    assert_valid(manifests, tmp_path)
    config = yaml.safe_load(documents(manifests)[("ConfigMap", "iam-iam-proxy")]["data"]["config.yaml"])
    settings = parse_settings(config)
    assert settings.sessions.store == "redis"
    assert settings.sessions.redis.url == "redis://iam-iam-proxy-redis:6379/1"  # beside the limits' database 0


def test_a_broken_manifest_is_caught(key, tmp_path):
    manifests = render(key)
    broken = manifests.replace("maxUnavailable: 1", "maxUnavailable: 1\n  maxUnavaliable: 2")
    wrong_type = manifests.replace("minReplicas: 2", 'minReplicas: "two"')
    for bad, field in ((broken, "maxUnavaliable"), (wrong_type, "minReplicas")):
        done = kubeconform(bad, tmp_path)
        assert done.returncode != 0 and json.loads(done.stdout)["summary"]["invalid"] == 1
        assert field in done.stdout


def test_the_chart_refuses_to_render_without_keys():
    done = run(tool("helm"), "template", "iam", str(CHART))
    assert done.returncode != 0 and "secrets: give the files of /etc/iam-proxy/secrets" in done.stderr


def test_the_docs_commands_render_a_valid_deployment(tmp_path):
    """docs/deployment.md, "Kubernetes": the values file and the commands, as written."""
    (tmp_path / "deploy").symlink_to(REPO / "deploy")
    (tmp_path / "values-prod.yaml").write_text(snippet("helm-values").text)
    env = {**os.environ, "PATH": f"{TOOLS}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", snippet("helm-render").text], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    manifests = (tmp_path / "iam-proxy.yaml").read_text()
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    assert_valid(manifests, schemas)
    found = documents(manifests)
    assert found[("HorizontalPodAutoscaler", "iam-proxy")]["spec"]["maxReplicas"] == 20
    config = parse_settings(yaml.safe_load(found[("ConfigMap", "iam-proxy")]["data"]["config.yaml"]))
    assert config.rate_limits.store == "redis" and config.routes[0].id == "erp"
