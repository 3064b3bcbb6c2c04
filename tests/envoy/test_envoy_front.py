"""A real Envoy in front of a recording upstream, its ext_authz filter pointed at a real iam-proxy:
the configurations of docs/envoy.md as written (only the ports changed), in gRPC and HTTP mode.
Clients connect from 127.0.0.5, so the audit can tell the client from Envoy (127.0.0.1)."""

from __future__ import annotations

import json
from contextlib import closing

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from bench.envoy_front import envoy_config
from envoy_support import start_envoy
from rawhttp import RecordingUpstream, request_bytes, send_raw
from support import audit_event, free_port

pytestmark = pytest.mark.peer("envoy")

CLIENT = "127.0.0.5"
SPOOFED = [("X-Forwarded-User", "mallory"), ("X-Forwarded-Groups", "admin"), ("X-Iam-Assertion", "forged")]


@pytest.fixture(scope="module")
def recorder():
    with closing(RecordingUpstream()) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def backend_url(recorder):
    return recorder.url


def _through(envoy, target: str, headers: list, method: str = "GET", body: bytes = b""):
    raw = request_bytes(method, target, [*headers, *([("Content-Length", str(len(body)))] if body else [])],
                        host="app.test")
    return send_raw(envoy["port"], raw + body, source=CLIENT)


def _token(iam, sub="alice", groups=("finance",)) -> tuple[str, str]:
    return ("Authorization", f"Bearer {iam.issuer.token(sub, list(groups))}")


def test_allowed_requests_reach_the_backend_with_our_identity_only(envoy, iam):
    r = _through(envoy, "/envoytest/invoices?id=1", [_token(iam), ("X-Internal-Secret", "s3"),
                                                    ("X-Request-Id", "from-client"), *SPOOFED])
    assert r.status == 200, r.body
    seen = r.upstream_head()
    assert seen.target == b"/envoytest/invoices?id=1"
    assert seen.get("x-forwarded-user") == b"alice"
    assert seen.get("x-forwarded-groups") == b"finance"
    assert seen.get("x-policy") == b"granted"
    assert seen.get("x-internal-secret") is None  # the policy's request_headers_to_remove
    assert seen.get("authorization") is None  # the route does not pass the credential on
    assert [v for k, v in seen.headers if k.lower() == b"x-forwarded-user"] == [b"alice"]
    assert r.header("x-served-by") == b"iam-proxy"  # response_headers_to_add
    keys = KeySet.import_key_set(httpx.get(f"{iam.url}/.well-known/jwks.json").json())
    assert jwt.decode(seen.get("x-iam-assertion").decode(), keys).claims["sub"] == "alice"
    # Envoy's request id (it replaces a client's) is the one the backend and the audit event have
    assert seen.get("x-request-id") == r.header("x-request-id") != b"from-client"
    event = audit_event(iam, r.header("x-request-id").decode())
    assert event["outcome"] == "allowed" and event["identity"]["sub"] == "alice"
    assert event["client"] == {"address": CLIENT, "peer": "127.0.0.1"}
    assert event["http"]["host"] == "app.test"  # the client's host in both modes: host-matched routes work


def test_denied_requests_get_the_policy_s_status_body_and_headers(envoy, iam):
    r = _through(envoy, "/envoytest/invoices", [_token(iam, "bob", ["sales"])])
    assert r.status == 418
    assert r.body == b"no coffee for you"
    assert r.header("x-denied-by") == b"envoytest"
    event = audit_event(iam, r.header("x-request-id").decode())
    assert event["outcome"] == "denied" and event["status"] == 418 and event["reason"] == "policy_denied"


def test_requests_without_a_credential_get_401_and_never_reach_the_backend(envoy, iam, recorder):
    r = _through(envoy, "/envoytest/invoices", [*SPOOFED])
    assert r.status == 401
    assert json.loads(r.body)["reason"] == "credential_missing"
    assert r.header("www-authenticate").startswith(b"Bearer")


def test_iam_s_own_pages_are_routed_to_iam_proxy_without_a_check(envoy, iam):
    r = _through(envoy, "/.iam/no-such-page", [])
    assert r.header("content-type") == b"application/problem+json"  # iam-proxy's answer, not the backend's
    assert b"GET /.iam/" not in r.body


def test_the_body_reaches_the_policy(envoy, iam):
    body = json.dumps({"amount": 12}).encode()
    r = _through(envoy, "/envoytest/payments", [_token(iam), ("Content-Type", "application/json")],
                 method="POST", body=body)
    event = audit_event(iam, r.header("x-request-id").decode())
    assert event["input"]["parsed_body"] == {"amount": 12}
    assert event["input"]["truncated_body"] is False


def test_opa_envoy_plugin_policy_runs_unchanged(envoy, iam):
    assert _through(envoy, "/envoy/status", []).status == 200
    assert _through(envoy, "/envoy/people/alice", [_token(iam)]).status == 200
    assert _through(envoy, "/envoy/people/bob", [_token(iam)]).status == 403


def test_iam_proxy_down_means_refused(iam, recorder, tmp_path_factory):
    """failure_mode_allow: false, as the docs set it: an unreachable iam-proxy refuses everything."""
    front = free_port()
    ports = {8000: front, 8080: free_port(), 8081: recorder.port, 9191: free_port(), 9192: free_port()}
    for mode in ("grpc", "http"):
        process = start_envoy(tmp_path_factory.mktemp(f"envoy-down-{mode}"), envoy_config(mode, ports), front)
        try:
            r = send_raw(front, request_bytes("GET", "/envoytest/a", [_token(iam)], host="app.test"), source=CLIENT)
            assert r.status == 403  # Envoy's status_on_error default
            assert b"GET /envoytest/a" not in r.body
        finally:
            process.stop()
