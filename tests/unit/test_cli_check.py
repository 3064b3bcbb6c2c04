"""`iam-proxy check` builds what `run` builds: a config it accepts cannot fail at start."""

from __future__ import annotations

import json

import pytest
import yaml

from iam_proxy.app import Proxy
from iam_proxy.core.errors import ConfigError
from iam_proxy.settings import parse_settings
from support import run_cli


@pytest.fixture
def config(tmp_path) -> dict:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": []}))
    return {
        "identity_providers": [{"id": "dev", "issuer": "https://idp", "jwks_file": str(jwks), "audiences": ["api"]}],
        "authenticators": {"bearer": {"type": "jwt", "providers": ["dev"]}},
        "routes": [{"id": "api", "upstream": "http://127.0.0.1:1", "authenticators": ["bearer"]}],
    }


def check(tmp_path, config: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return run_cli("check", "--config", str(path))


def test_a_buildable_config_passes(tmp_path, config):
    result = check(tmp_path, config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 1 routes, 1 authenticators, policy opa-lib revision")


def test_a_config_that_validates_but_cannot_be_built_fails_check(tmp_path, config):
    key = tmp_path / "assertion-key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    config["identity_headers"] = {"assertion": {"key_file": str(key)}}
    settings = parse_settings(config)  # the settings alone accept it
    with pytest.raises(ConfigError):
        Proxy(settings)  # what `run` builds first: it would not start
    result = check(tmp_path, config)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        f"error: identity_headers.assertion.key_file: {key} is not a P-256 key (algorithm ES256)")


def test_any_other_failure_to_build_the_proxy_fails_check_naming_it(tmp_path, config, monkeypatch, capsys):
    import iam_proxy.app
    from iam_proxy.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("the signer broke")

    monkeypatch.setattr(iam_proxy.app, "AssertionSigner", broken)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check", "--config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: the proxy cannot be built from this config: RuntimeError: the signer broke")


def test_listener_tls_files_are_loaded(tmp_path, config):
    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate")
    config["listeners"] = {"proxy": {"port": 8080, "tls": {"cert_file": str(bad), "key_file": str(bad)}}}
    result = check(tmp_path, config)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("error: listeners.*.tls: cannot load the TLS files")


def test_check_leaves_a_live_spool_alone(tmp_path, config):
    """A running proxy's spool (here with a record being written) is recovered by that proxy only."""
    spool = tmp_path / "spool"
    spool.mkdir()
    segment = spool / "00000001.seg"
    segment.write_bytes(b'{"a": 1}\n{"half-writ')
    config["audit"] = {"spool": {"dir": str(spool)},
                       "sinks": [{"type": "file", "path": str(tmp_path / "audit.log")}]}
    result = check(tmp_path, config)
    assert result.returncode == 0, result.stderr
    assert segment.read_bytes() == b'{"a": 1}\n{"half-writ'
    assert sorted(p.name for p in spool.iterdir()) == ["00000001.seg"]
    assert not (tmp_path / "audit.log").exists()
