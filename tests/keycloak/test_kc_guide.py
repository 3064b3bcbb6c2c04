"""docs/idp/keycloak.md's quick start, run as written against the session's Keycloak: kcadm.sh
creates the realm, group, user and both clients; iam-proxy runs the guide's config; Chromium signs
alice in; the client-credentials job gets 200; an admin's logout at Keycloak reaches the proxy over
the back channel (Keycloak trusts the proxy's CA) and the old cookie is refused as `session_revoked`.

Only the environment differs from a reader's machine: ports, the test CA and Keycloak's URL are
exported after the guide's own `export` lines."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from kc_support import ADMIN_PASSWORD
from snippets import snippet
from support import REPO, Process, free_port, wait_for_port

from test_kc_sessions import _sign_in


def _bash(script: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env,
                            cwd=cwd, timeout=180)
    assert result.returncode == 0, f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture
def guide_env(keycloak, keycloak_bin, dev_tls, upstream, tmp_path) -> dict[str, str]:
    try:
        keycloak.admin("master").delete_realm("demo")  # a previous run against a reused Keycloak
    except Exception:  # noqa: BLE001 - there was none
        pass
    exported = _bash(snippet("keycloak-guide-env").text + "env -0 >&2", dict(os.environ), tmp_path)
    env = dict(os.environ)
    env.update(line.split("=", 1) for line in exported.split("\0") if "=" in line)
    port = free_port()
    env.update({"KC_URL": keycloak.base_url, "KC_ADMIN_PASSWORD": ADMIN_PASSWORD, "PROXY_PORT": str(port),
                "PROXY_URL": f"https://localhost:{port}", "ADMIN_PORT": str(free_port()),
                "TLS_CERT": str(dev_tls.cert_file), "TLS_KEY": str(dev_tls.key_file), "CA_FILE": str(dev_tls.ca_file),
                "UPSTREAM_URL": upstream, "HOME": str(tmp_path),
                "PATH": f"{keycloak_bin}:{env['PATH']}"})
    for name in (".venv", "policies"):  # the guide runs from a clone of the repository
        (tmp_path / name).symlink_to(REPO / name)
    yield env
    try:
        keycloak.admin("master").delete_realm("demo")
    except Exception:  # noqa: BLE001 - best effort
        pass


def test_the_keycloak_guide_end_to_end(guide_env, page, tmp_path, dev_tls):
    env, cwd = guide_env, tmp_path
    for step in ("keycloak-guide-realm", "keycloak-guide-browser-client", "keycloak-guide-api-client"):
        _bash(snippet(step).text, env, cwd)
    (cwd / "keycloak-demo.yaml").write_text(snippet("keycloak-guide-config").text)
    checked = _bash(snippet("keycloak-guide-check").text, env, cwd)
    assert "ok: 1 routes" in checked
    assert "listeners.proxy.tls.cert_file: if keycloak calls back-channel logout" in checked

    proxy = Process(["bash", "-c", snippet("keycloak-guide-run").text], tmp_path / "guide-proxy.log", env=env,
                    cwd=cwd)
    try:
        wait_for_port(int(env["PROXY_PORT"]), proxy.proc, timeout=30)
        proxy_url = env["PROXY_URL"]

        # 5. the browser
        cookie = _sign_in(page, proxy_url, "/api/invoices/1")
        seen = {k.lower(): v for k, v in json.loads(page.inner_text("body"))["headers"].items()}
        assert seen["x-forwarded-groups"] == "finance"
        assert seen["x-forwarded-preferred-username"] == "alice"
        assert seen["x-forwarded-user"] != "alice" and len(seen["x-forwarded-user"]) == 36  # Keycloak's user id

        # 6. the job's client-credentials token
        called = _bash(snippet("keycloak-guide-api-call").text, env, cwd)
        assert called.rstrip().endswith("HTTP 200"), called

        # 7. back-channel logout: the old cookie is refused, and says why
        verify = ssl.create_default_context(cafile=str(dev_tls.ca_file))
        _bash(snippet("keycloak-guide-logout").text, env, cwd)
        deadline, status = time.monotonic() + 15, 200
        while status == 200 and time.monotonic() < deadline:
            time.sleep(0.3)
            r = httpx.get(f"{proxy_url}/api/invoices/1", verify=verify,
                          headers={"accept": "application/json", "cookie": f"__Host-iam_session={cookie}"})
            status = r.status_code
        assert status == 401, proxy.logs()[-3000:]
        assert r.json()["reason"] == "session_revoked"
        assert "back-channel logout from keycloak ended 1 session(s)" in proxy.logs()
    finally:
        proxy.stop()
