"""Helpers for the SAML tests (imported by tests/saml and tests/keycloak/test_kc_saml.py): the saml-idp
npm IdP as a process, the proxy config with a SAML SP, and a readiness wait."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
from idp_kit import make_keypair

from support import Process, free_port, wait_for_port

HERE = Path(__file__).parent
TOOLS = Path(os.environ.get("IAM_PROXY_TOOLS", Path.home() / ".cache" / "iam-proxy"))
SAML_IDP_BIN = TOOLS / "saml-idp" / "node_modules" / ".bin" / "saml-idp"
CHROMIUM = "/usr/lib/chromium/chromium"
NPM_IDP_ENTITY = "urn:test:saml-idp"


class NpmSamlIdP:
    """The saml-idp npm package (samlp + xml-crypto: no code shared with pysaml2) as a real process."""

    def __init__(self, directory: Path, sp_base: str) -> None:
        if not SAML_IDP_BIN.exists():
            raise RuntimeError(f"{SAML_IDP_BIN} is missing: run scripts/install-peers.sh")
        self.key_file, self.cert_file = make_keypair(directory, "npm-idp")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.entity_id = NPM_IDP_ENTITY
        self.process = Process(
            [str(SAML_IDP_BIN), "--host", "127.0.0.1", "--port", str(self.port), "--cert", str(self.cert_file),
             "--key", str(self.key_file), "--issuer", NPM_IDP_ENTITY,
             "--acsUrl", f"{sp_base}/.iam/saml/acs", "--audience", f"{sp_base}/.iam/saml/metadata",
             "--sloUrl", f"{sp_base}/.iam/saml/slo"],
            directory / f"saml-idp-{self.port}.log", cwd=directory)
        wait_for_port(self.port, self.process.proc, timeout=30)

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/metadata"

    def stop(self) -> None:
        self.process.stop()


def saml_proxy_config(*, port: int, upstream: str, tmp: Path, sp_keys: tuple[Path, Path],
                      idp: dict, preset: str = "generic", **saml_overrides) -> dict:
    """A proxy whose /app/** route needs a SAML session; /public/** is open (a landing page)."""
    key_file, cert_file = sp_keys
    saml = {"type": "saml", "base_url": f"http://127.0.0.1:{port}", "key_file": str(key_file),
            "cert_file": str(cert_file), "idp": idp, "preset": preset, "post_logout_path": "/public/signed-out",
            **saml_overrides}
    return {
        "listeners": {"proxy": {"host": "127.0.0.1", "port": port},
                      "admin": {"host": "127.0.0.1", "port": free_port()}},
        "authenticators": {"saml": saml, "public": {"type": "anonymous"}},
        "routes": [
            {"id": "app", "match": {"path": "/app/**"}, "upstream": upstream, "authenticators": ["saml"],
             "policy": {"path": "saml/authz/decision"}},
            {"id": "public", "match": {"path": "/public/**"}, "upstream": upstream,
             "authenticators": ["public"], "policy": {"path": "saml/authz/allow_public"}},
        ],
        "policy": {"dir": str(HERE / "policies"), "reload_interval_seconds": 0},
        "audit": {"sinks": [{"type": "file", "path": str(tmp / "audit.jsonl")}]},
        "sessions": {"secret": "s" * 40, "cookie_name": "iam_session", "secure": False,
                     "revocation_file": str(tmp / "revoked-sessions.jsonl")},
    }


def wait_saml_ready(proxy, timeout: float = 20.0):
    """The proxy once /readyz says the IdP metadata is loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        checks = httpx.get(f"{proxy.admin_url}/readyz", timeout=5).json().get("checks", {})
        if checks.get("saml:saml"):
            return proxy
        time.sleep(0.1)
    raise TimeoutError(f"SAML metadata not loaded: {proxy.process.logs()[-2000:]}")


def audit_events(proxy) -> list[dict]:
    """The proxy's audit events so far; a line still being written is left out."""
    import json

    text = proxy.audit_path.read_text() if proxy.audit_path and proxy.audit_path.exists() else ""
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def wait_event(proxy, predicate, timeout: float = 20.0) -> dict:
    """The last audit event matching `predicate`, waiting for it (events land after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in audit_events(proxy) if predicate(e)]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no matching audit event after {timeout}s")
        time.sleep(0.05)
