"""docs/configuration.md's `sessions` block, loaded as written by the real settings loader."""

from __future__ import annotations

import yaml

from snippets import snippet
from iam_proxy.settings import parse_settings


def test_the_sessions_block_loads(monkeypatch):
    monkeypatch.setenv("IAM_PROXY_SESSION_SECRET", "s" * 48)
    config = yaml.safe_load(snippet("config-sessions").text)
    config.update({"authenticators": {"public": {"type": "anonymous"}},
                   "routes": [{"id": "r", "match": {"path": "/**"}, "upstream": "http://127.0.0.1:9",
                               "authenticators": ["public"]}]})
    sessions = parse_settings(config).sessions
    assert sessions.store == "cookie" and sessions.secure and sessions.lifetime_seconds == 28800
    assert str(sessions.revocation_file) == "/var/lib/iam-proxy/revoked-sessions.jsonl"
