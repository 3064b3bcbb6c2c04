"""The iam-proxy side of docs/idp/{entra-id,okta,auth0,ping}.md, against recorded IdP documents.

Each recording under tests/idp_recordings/ holds a discovery document and an access token's claims
shaped like that IdP's (field set, value formats, `aud` as the IdP writes it). The test serves the
discovery document and a JWKS from a local HTTP server, signs the token with a test key under a
`kid` like the IdP's, starts the real proxy with the guide's own provider and authenticator blocks
(only the issuer's host is this server's), and checks what the upstream receives: the guide's
`audiences` accept the token, and the preset maps the IdP's claims to the identity headers and the
signed assertion."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from joserfc import jwt
from joserfc.jwk import RSAKey

from snippets import snippet
from support import ProxyProcess, free_port

RECORDINGS = Path(__file__).resolve().parents[1] / "idp_recordings"
SECRETS = {"IAM_PROXY_SESSION_SECRET": "s" * 40, "ENTRA_CLIENT_SECRET": "x", "OKTA_CLIENT_SECRET": "x",
           "AUTH0_CLIENT_SECRET": "x", "PING_CLIENT_SECRET": "x"}


class RecordedIdP:
    """Serves a recorded discovery document and the JWKS of a fresh key, at the recording's paths."""

    def __init__(self, recording: dict) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.issuer = self.base + recording["issuer_path"]
        self.key = RSAKey.generate_key(2048, private=True)
        self.recording = recording
        discovery = self._fill(recording["discovery"])
        jwk = {**self.key.as_dict(private=False), "kid": recording["kid"], "use": "sig",
               **self._fill(recording["key_extras"])}
        self.documents = {
            self.issuer.rstrip("/") + "/.well-known/openid-configuration": discovery,
            discovery["jwks_uri"]: {"keys": [jwk]},
        }
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _fill(self, value):
        text = json.dumps(value).replace("{issuer}", self.issuer.rstrip("/") if not self.issuer.endswith("/")
                                         else self.issuer).replace("{base}", self.base)
        return json.loads(text)

    def _handler(self):
        documents = self.documents
        base = self.base

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server interface
                body = documents.get(base + self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(body or {"error": "not found"}).encode())

            def log_message(self, *args):
                return None

        return Handler

    def token(self) -> str:
        now = int(time.time())
        claims = self._fill(self.recording["claims"])
        claims = {k: (now - 60 if v == "{now}" else v) for k, v in claims.items()}
        claims.update({"iat": now - 60, "nbf": now - 60, "exp": now + 3540})
        return jwt.encode({"typ": "JWT", "alg": "RS256", "kid": self.recording["kid"]}, claims, self.key)


def _guide_config(recording: dict, idp: RecordedIdP, upstream: str, tmp_path: Path) -> dict:
    config = yaml.safe_load(snippet(recording["guide"]).text)
    provider = config["identity_providers"][0]
    provider["issuer"] = idp.issuer  # the recording's path, on this machine
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "guide.rego").write_text(
        "package guide.authz\n\nimport rego.v1\n\ndecision := {\"allowed\": true} if input.identity.sub != \"\"\n")
    config.update({
        "listeners": {"proxy": {"host": "127.0.0.1", "port": free_port()},
                      "admin": {"host": "127.0.0.1", "port": free_port()}},
        "routes": [{"id": "api", "match": {"path": "/api/**"}, "upstream": upstream,
                    "authenticators": [recording["token_authenticator"]], "policy": {"path": "guide/authz/decision"}}],
        "policy": {"dir": str(tmp_path / "policies"), "reload_interval_seconds": 0},
        "audit": {"sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl")}]},
    })
    config["sessions"]["revocation_file"] = str(tmp_path / "revoked")
    return config


@pytest.mark.parametrize("name", ["entra-id", "okta", "auth0", "ping"])
def test_the_guide_config_accepts_the_idps_token_and_maps_its_claims(name, upstream, tmp_path):
    recording = json.loads((RECORDINGS / f"{name}.json").read_text())
    idp = RecordedIdP(recording)
    try:
        config = _guide_config(recording, idp, upstream, tmp_path)
        proxy = ProxyProcess(config, tmp_path, name=f"guide-{name}", env=SECRETS).wait_ready()
        try:
            with proxy.client() as client:
                r = client.get("/api/invoices/1", headers={"authorization": f"Bearer {idp.token()}"})
            assert r.status_code == 200, r.text + proxy.process.logs()[-2000:]
            seen = {k.lower(): v for k, v in r.json()["headers"].items()}
            expect = recording["expect"]
            for header in [h for h in expect if h.startswith("x-")]:
                assert seen[header] == expect[header], header
            assertion = json.loads(_payload(seen["x-iam-assertion"]))  # signed by the proxy: its own tests verify
            assert assertion.get("roles", []) == expect["roles"]
            assert assertion.get("tenant") == expect["tenant"]
        finally:
            proxy.stop()
    finally:
        idp.server.shutdown()


def _payload(token: str) -> str:
    import base64

    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()
