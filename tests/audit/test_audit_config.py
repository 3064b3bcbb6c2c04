"""The `audit:` settings: errors name the key path; secrets never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from iam_proxy.core.errors import ConfigError
from iam_proxy.settings import parse_settings
from support import base_config


def _config(audit: dict) -> dict:
    config = base_config("http://127.0.0.1:9", Path("/nonexistent/jwks.json"), Path("/tmp/a.jsonl"),
                         Path("/nonexistent/policies"))
    config["audit"] = audit
    return config


@pytest.mark.parametrize("audit,message", [
    ({"sinks": [{"type": "syslog", "host": "h", "port": 514}]}, "audit.sinks[0]: a syslog sink needs audit.spool.dir"),
    ({"spool": {"dir": "/tmp/s"}, "sinks": [{"type": "http", "kind": "splunk_hec", "url": "https://s"}]},
     "splunk_hec needs token"),
    ({"spool": {"dir": "/tmp/s"}, "sinks": [{"type": "http", "kind": "webhook", "url": "ftp://x"}]},
     "audit.sinks[0].url: must be an http:// or https:// URL"),
    ({"sinks": [{"type": "file", "path": "/tmp/a", "privacy": {"rules": [{"field": "email",
                                                                          "action": "pseudonymize"}]}}]},
     "pseudonym_key is required"),
    ({"sinks": [{"type": "file", "path": "/tmp/a", "format": "cef"}]}, "the hash chain needs a JSON format"),
    ({"sinks": [{"type": "file", "path": "/tmp/a", "name": "x"}, {"type": "stdout", "name": "x"}]},
     "audit.sinks[1].name: duplicate 'x'"),
    ({"spool": {"dir": "/tmp/s", "overflow": "ignore"}, "sinks": []}, "audit.spool.overflow"),
    ({"sinks": [{"type": "file", "path": "/tmp/a", "chain": {"algorithm": "ed25519"}}]},
     "algorithm ed25519 needs ed25519_private_key_file"),
    ({"sinks": [{"type": "file", "path": "/tmp/a", "colour": "red"}]}, "audit.sinks[0].colour"),
])
def test_config_errors_name_the_key(audit, message):
    with pytest.raises(ConfigError) as excinfo:
        parse_settings(_config(audit))
    assert message in str(excinfo.value)


def test_secrets_do_not_print():
    settings = parse_settings(_config({"spool": {"dir": "/tmp/s"}, "sinks": [
        {"type": "http", "kind": "splunk_hec", "url": "https://s", "token": "hec-secret-token"},
        {"type": "file", "path": "/tmp/a", "chain": {"algorithm": "hmac-sha256", "hmac_key": "chain-secret"}}]}))
    text = repr(settings) + str(settings.model_dump())
    assert "hec-secret-token" not in text and "chain-secret" not in text
