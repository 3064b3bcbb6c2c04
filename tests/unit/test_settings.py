"""Config validation: every error names the key path; secrets come from the environment."""

from __future__ import annotations

import pytest
import yaml

from iam_proxy.core.errors import ConfigError
from iam_proxy.settings import interpolate_env, load_settings, parse_settings
from support import run_cli


def minimal() -> dict:
    return {
        "identity_providers": [{"id": "dev", "issuer": "https://idp", "jwks_file": "jwks.json",
                                "audiences": ["api"]}],
        "authenticators": {"bearer": {"type": "jwt", "providers": ["dev"]}},
        "routes": [{"id": "api", "upstream": "http://127.0.0.1:1", "authenticators": ["bearer"]}],
    }


def test_minimal_config_is_valid():
    settings = parse_settings(minimal())
    assert settings.routes[0].policy.path == "iam/authz/decision"
    assert settings.identity_providers[0].algorithms == ["RS256"]


@pytest.mark.parametrize("mutate, where", [
    (lambda c: c["routes"][0].update(upstream="ftp://x"), "routes[0].upstream"),
    (lambda c: c["routes"][0].update(authenticators=["nope"]), "routes[0].authenticators[0]"),
    (lambda c: c["routes"][0].update(colour="blue"), "routes[0].colour"),
    (lambda c: c["routes"].append(dict(c["routes"][0])), "routes[1].id"),
    (lambda c: c["authenticators"]["bearer"].update(providers=["ghost"]), "authenticators.bearer.providers[0]"),
    (lambda c: c["identity_providers"][0].update(algorithms=["HS256"]), "identity_providers[0].algorithms[0]"),
    (lambda c: c["identity_providers"][0].update(jwks_uri="https://idp/jwks"), "identity_providers[0]"),
    (lambda c: c["routes"][0].update(match={"path": "api/**"}), "routes[0].match.path"),
    (lambda c: c["routes"][0].update(policy={"path": "not a path"}), "routes[0].policy.path"),
    (lambda c: c.update(routes=[]), "routes"),
    (lambda c: c.update(identity_headers={"assertion": {"ttl_seconds": 60, "reuse_seconds": 31}}),
     "identity_headers.assertion.reuse_seconds"),
    (lambda c: c.update(identity_headers={"assertion": {"algorithm": "HS256"}}), "identity_headers.assertion.algorithm"),
])
def test_errors_name_the_key_path(mutate, where):
    config = minimal()
    mutate(config)
    with pytest.raises(ConfigError) as excinfo:
        parse_settings(config)
    assert str(excinfo.value).startswith(f"{where}:")


def test_symmetric_algorithms_cannot_be_configured():
    config = minimal()
    config["identity_providers"][0]["algorithms"] = ["none"]
    with pytest.raises(ConfigError, match=r"identity_providers\[0\]\.algorithms\[0\]"):
        parse_settings(config)


def test_env_interpolation_with_default_and_missing():
    env = {"UPSTREAM": "http://10.0.0.1:8000"}
    assert interpolate_env({"a": "${UPSTREAM}/x", "b": "${NOPE:-fallback}"}, environ=env) == {
        "a": "http://10.0.0.1:8000/x", "b": "fallback"}
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.upstream: environment variable MISSING is not set"):
        interpolate_env({"routes": [{"upstream": "${MISSING}"}]}, environ={})


def test_secrets_never_print():
    config = minimal()
    config["secrets"] = {"pepper": "hunter2"}
    settings = parse_settings(config)
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert settings.secrets["pepper"].get_secret_value() == "hunter2"


def test_cli_check_exits_2_naming_the_key(tmp_path):
    config = minimal()
    config["routes"][0]["timeout_seconds"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: routes[0].timeout_seconds:")


def test_cli_reports_yaml_syntax_errors_with_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("routes:\n  - id: a\n    upstream: [\n")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert f"{path}:" in result.stderr and "invalid YAML" in result.stderr


def test_a_key_given_twice_in_one_mapping_is_an_error_with_both_lines(tmp_path):
    # YAML keeps the last one silently: here the first `assertion:` block would be dropped
    config = minimal()
    text = yaml.safe_dump(config) + "identity_headers:\n  assertion: {algorithm: Ed25519}\n  assertion: {ttl_seconds: 60}\n"
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    lines = text.splitlines()
    first, second = (n + 1 for n, line in enumerate(lines) if line.startswith("  assertion:"))
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path)
    assert str(excinfo.value) == (f"{path}:{second}: invalid YAML (duplicate key 'assertion', first at line {first}: "
                                  "YAML would keep only the last)")


def test_a_merge_key_may_be_overridden_and_other_mappings_may_repeat_a_key(tmp_path):
    path = tmp_path / "merge.yaml"
    config = minimal()
    del config["routes"]
    path.write_text(yaml.safe_dump(config) + (
        "routes:\n"
        "  - &api {id: api, upstream: 'http://127.0.0.1:1', authenticators: [bearer], timeout_seconds: 5}\n"
        "  - <<: *api\n"
        "    id: api2\n"
        "    match: {path: /v2/**}\n"))
    settings = load_settings(path)
    assert [(r.id, r.timeout_seconds) for r in settings.routes] == [("api", 5), ("api2", 5)]


def test_kerberos_without_its_extra_names_the_key_and_the_install_command(monkeypatch):
    import iam_proxy.core.extras

    real_find_spec = iam_proxy.core.extras.importlib.util.find_spec
    monkeypatch.setattr(iam_proxy.core.extras.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gssapi" else real_find_spec(name, *a))
    config = minimal()
    config["authenticators"]["krb"] = {"type": "kerberos", "keytab": "/etc/krb5.keytab"}
    with pytest.raises(ConfigError) as excinfo:
        parse_settings(config)
    assert str(excinfo.value).startswith("authenticators.krb.type:")
    assert "pip install 'iam-proxy[kerberos]'" in str(excinfo.value)


def test_saml_without_xmlsec1_names_the_key_and_the_package(monkeypatch):
    import iam_proxy.core.extras

    monkeypatch.setattr(iam_proxy.core.extras.shutil, "which", lambda name: None)
    monkeypatch.setattr(iam_proxy.core.extras.Path, "exists", lambda self: False)
    config = minimal()
    config["authenticators"]["sso"] = {"type": "saml", "base_url": "https://proxy.example", "key_file": "k.pem",
                                       "cert_file": "c.pem", "idp": {"metadata_file": "idp.xml"}}
    with pytest.raises(ConfigError) as excinfo:
        parse_settings(config)
    assert str(excinfo.value).startswith("authenticators.sso.type:")
    assert "apt-get install xmlsec1" in str(excinfo.value)
