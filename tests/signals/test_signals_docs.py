"""docs/signals.md: the configurations as written, in a real proxy. Their transmitter is not there,
which is what the docs promise to survive: the proxy serves, and pushes wait for the keys (503)."""

from __future__ import annotations

import time

import httpx
import pytest
import yaml

from snippets import snippet
from support import ProxyProcess
from transmitter import CAEP, Transmitter

ENV = {"SSF_PUSH_SECRET": "push-secret", "SSF_TRANSMITTER_TOKEN": "management-token"}


@pytest.mark.parametrize("name", ["signals-push", "signals-poll"])
def test_the_documented_configurations_run(proxy_config, issuer, tmp_path, name):
    proxy_config.update(yaml.safe_load(snippet(name).text))
    proxy = ProxyProcess(proxy_config, tmp_path, env=ENV).wait_ready()
    try:
        token = issuer.token("alice", ["finance"])
        assert httpx.get(f"{proxy.url}/api/invoices/1", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        stranger = Transmitter()
        try:
            _, from_idp = stranger.issue(CAEP + "session-revoked", {"format": "opaque", "id": "alice"},
                                         issuer="https://idp.example.com")
            _, unknown = stranger.issue(CAEP + "session-revoked", {"format": "opaque", "id": "alice"})
        finally:
            stranger.stop()
        endpoint = f"{proxy.url}/.iam/ssf/events"
        if name == "signals-push":
            assert stranger.push(endpoint, from_idp, authorization=None).status_code == 401
            assert stranger.push(endpoint, from_idp).status_code == 503  # the keys are not fetched yet
            deferred = [e for e in proxy.audit_events() if e.get("kind") == "signal" and e["outcome"] == "deferred"]
            assert [e["reason"] for e in deferred] == ["transmitter_not_ready"]
            refused = stranger.push(endpoint, unknown)
            assert (refused.status_code, refused.json()["err"]) == (400, "invalid_issuer")
        deadline = time.monotonic() + 5
        while "transmitter corp-idp not set up" not in proxy.process.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "transmitter corp-idp not set up" in proxy.process.logs()
    finally:
        proxy.stop()


def test_a_signals_config_error_names_the_key(proxy_config, tmp_path):
    from support import run_cli

    proxy_config["signals"] = {"transmitters": [{"id": "x", "issuer": "https://i", "audience": "a",
                                                 "jwks_uri": "https://i/jwks", "delivery": "poll"}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(proxy_config))
    check = run_cli("check", "--config", str(path))
    assert check.returncode == 2
    assert "signals.transmitters[0]" in check.stderr and "poll_url" in check.stderr
