"""`iam-proxy check` reads the client's registration from the real Keycloak (through a keycloak
enricher's service account): a callback URL Keycloak would refuse, and back-channel logout to a
proxy certificate Keycloak's default trust store cannot verify, are warned about (exit 0)."""

from __future__ import annotations

import yaml

from support import free_port, run_cli


def _check(config: dict, path, *urls: str) -> list[str]:
    path.write_text(yaml.safe_dump(config))
    result = run_cli("check", "--config", str(path), *[a for u in urls for a in ("--public-url", u)])
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith(("warning:", "note:"))]


def test_check_reads_redirect_uris_and_backchannel_logout_from_keycloak(keycloak, kc_base_config, tmp_path):
    config = kc_base_config
    config["enrichers"] = {"kc_admin": {"type": "keycloak", "server_url": keycloak.base_url, "realm": "iam-test",
                                        "client_id": "iam-enricher", "client_secret": "iam-enricher-test-secret"}}
    registered = f"https://127.0.0.1:{free_port()}"
    keycloak.register_proxy("iam-test", registered)

    warned = _check(config, tmp_path / "c.yaml", registered)
    assert not any("redirect URIs" in w and w.startswith("warning: provider kc") for w in warned), warned
    assert any(w.startswith("warning: provider kc: back-channel logout goes to " + registered)
               and "--truststore-paths" in w and "not in the system trust store" in w for w in warned), warned

    elsewhere = "https://proxy.example.test"
    warned = _check(config, tmp_path / "c.yaml", elsewhere)
    assert any(w.startswith(f"warning: provider kc: {elsewhere}/.iam/callback is not among client 'iam-proxy'")
               for w in warned), warned

    config["enrichers"]["kc_admin"]["client_secret"] = "wrong-secret"
    warned = _check(config, tmp_path / "c.yaml", registered)
    assert any(w.startswith("note: provider kc: could not read client 'iam-proxy' from Keycloak") for w in warned)
