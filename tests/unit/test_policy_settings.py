"""Settings for engines, cache, bundles and decision logs: every mistake names its key path."""

from __future__ import annotations

import pytest

from iam_proxy.core.errors import ConfigError
from iam_proxy.settings import parse_settings


def _config(**policy) -> dict:
    return {
        "authenticators": {"public": {"type": "anonymous"}},
        "routes": [{"id": "r", "upstream": "http://127.0.0.1:9", "authenticators": ["public"]}],
        "policy": policy,
    }


@pytest.mark.parametrize("policy, message", [
    ({"engine": "opal"}, "policy.engine: Input should be 'auto', 'embedded', 'opa-lib', 'opa-wasm' or 'opa'"),
    ({"opa": {"url": "127.0.0.1:8181"}}, "policy.opa.url: must be an http:// or https:// URL"),
    ({"opa": {"url": "http://o", "timeout_seconds": 0}}, "policy.opa.timeout_seconds"),
    ({"opa": {"url": "http://o", "timout_seconds": 1}}, "policy.opa.timout_seconds: Extra inputs are not permitted"),
    ({"dir": "p", "bundle": {"file": "b.tar.gz"}}, "policy: set dir or bundle, not both"),
    ({"bundle": {}}, "policy.bundle: set exactly one of file, url"),
    ({"bundle": {"file": "b", "url": "http://x/b"}}, "policy.bundle: set exactly one of file, url"),
    ({"bundle": {"url": "ftp://x/b"}}, "policy.bundle: url must be an http:// or https:// URL"),
    ({"bundle": {"file": "b", "verification": {"algorithm": "HS256"}}},
     "policy.bundle.verification: HS256 needs secret"),
    ({"bundle": {"file": "b", "verification": {"algorithm": "RS256", "secret": "s"}}},
     "policy.bundle.verification: RS256 needs public_key_file"),
    ({"bundle": {"file": "b", "verification": {"algorithm": "none", "public_key_file": "k"}}},
     "policy.bundle.verification.algorithm"),
    ({"cache": {"max_entries": 0}}, "policy.cache.max_entries"),
    ({"decision_log": {}}, "policy.decision_log.path: Field required"),
])
def test_mistakes_name_their_key_path(policy, message):
    with pytest.raises(ConfigError) as caught:
        parse_settings(_config(**policy))
    assert message in str(caught.value)


def test_engine_per_route_defaults_to_the_global_one():
    config = _config(engine="opa", opa={"url": "http://127.0.0.1:8181/"})
    config["routes"].append({**config["routes"][0], "id": "local", "policy": {"engine": "embedded", "cache": True}})
    settings = parse_settings(config)
    assert [settings.engine_for(r) for r in settings.routes] == ["opa", "embedded"]
    assert settings.policy.opa is not None and settings.policy.opa.url == "http://127.0.0.1:8181"
    assert settings.policy.opa.timeout_seconds == 0.25


def test_secrets_do_not_print():
    settings = parse_settings(_config(opa={"url": "http://o", "token": "opa-s3cret"},
                                      bundle={"file": "b", "verification": {"algorithm": "HS256",
                                                                            "secret": "bundle-s3cret"}}))
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
