"""The gRPC Check service of a real iam-proxy process, spoken to with stubs of Envoy's published protos:
the same authenticators, policies, identity headers, signed assertion and audit event as the proxy."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
from google.rpc import code_pb2
from joserfc import jwt
from joserfc.jwk import KeySet

from envoy_support import check_request, grpc_check, headers_of, start_iam
from support import audit_event, free_port


@pytest.fixture(scope="module")
def iam(upstream, tmp_path_factory):
    proxy = start_iam(tmp_path_factory.mktemp("extauthz-grpc"), upstream)
    yield proxy
    proxy.stop()


def _bearer(iam, sub="alice", groups=("finance",)) -> dict[str, str]:
    return {"authorization": f"Bearer {iam.issuer.token(sub, list(groups))}"}


def test_allowed_check_sets_the_identity_headers_and_a_verifiable_assertion(iam):
    spoofed = {"x-forwarded-user": "mallory", "x-forwarded-groups": "admin", "x-internal-secret": "s3"}
    response = grpc_check(iam.grpc_port, check_request("/envoytest/a?x=1", {**_bearer(iam), **spoofed}))
    assert response.status.code == code_pb2.OK
    ok = response.ok_response
    upstream = headers_of(ok.headers)
    assert upstream["x-forwarded-user"] == "alice"
    assert upstream["x-forwarded-groups"] == "finance"
    assert upstream["x-forwarded-email"] == "alice@example.org"
    assert upstream["x-policy"] == "granted"
    # the client's credential, the policy's removal and the owned header this route does not set
    assert set(ok.headers_to_remove) == {"authorization", "x-internal-secret", "x-forwarded-access-token"}
    assert headers_of(ok.response_headers_to_add) == {"x-served-by": "iam-proxy"}
    assert dict(response.dynamic_metadata) == {"subject": "alice", "upgrade": False}
    keys = KeySet.import_key_set(httpx.get(f"{iam.url}/.well-known/jwks.json").json())
    claims = jwt.decode(upstream["x-iam-assertion"], keys).claims
    assert claims["sub"] == "alice" and claims["aud"] == "envoytest"


def test_policy_denial_carries_the_status_body_and_headers_the_policy_chose(iam):
    response = grpc_check(iam.grpc_port, check_request("/envoytest/a", _bearer(iam, "bob", ["sales"])))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    denied = response.denied_response
    assert denied.status.code == 418
    assert denied.body == "no coffee for you"
    assert headers_of(denied.headers)["x-denied-by"] == "envoytest"
    assert not response.HasField("ok_response")


def test_missing_and_bad_credentials_are_401_with_a_challenge(iam):
    missing = grpc_check(iam.grpc_port, check_request("/envoytest/a"))
    assert missing.status.code == code_pb2.UNAUTHENTICATED
    assert missing.denied_response.status.code == 401
    assert json.loads(missing.denied_response.body)["reason"] == "credential_missing"
    assert headers_of(missing.denied_response.headers)["www-authenticate"].startswith("Bearer")
    bad = grpc_check(iam.grpc_port, check_request("/envoytest/a", {"authorization": "Bearer not.a.token"}))
    assert bad.denied_response.status.code == 401
    assert json.loads(bad.denied_response.body)["reason"] != "credential_missing"


def test_a_malformed_decision_fails_closed_and_is_audited(iam):
    headers = {**_bearer(iam, "carol", ["broken"]), "x-request-id": "broken-metadata"}
    response = grpc_check(iam.grpc_port, check_request("/envoytest/a", headers))
    assert response.status.code != code_pb2.OK
    assert json.loads(response.denied_response.body)["reason"] == "policy_malformed"
    event = audit_event(iam, "broken-metadata")
    assert event["outcome"] != "allowed" and event["reason"] == "policy_malformed"


def test_no_route_is_refused_not_allowed(iam):
    response = grpc_check(iam.grpc_port, check_request("/nowhere", _bearer(iam)))
    assert response.denied_response.status.code == 404


def test_check_and_proxied_request_write_the_same_audit_event(iam):
    token = _bearer(iam)
    grpc_check(iam.grpc_port, check_request("/api/invoices/7", {**token, "x-request-id": "via-envoy"},
                                            client="198.51.100.9"))
    httpx.get(f"{iam.url}/api/invoices/7", headers={**token, "x-request-id": "via-proxy"})
    checked, proxied = audit_event(iam, "via-envoy"), audit_event(iam, "via-proxy")
    assert checked.keys() == proxied.keys()
    for event in (checked, proxied):
        assert event["outcome"] == "allowed" and event["status"] == 200
        assert event["identity"]["sub"] == "alice"
        assert event["route"]["id"] == "api"
        assert event["decision"]["path"] == "iam/authz/decision"
    assert checked["client"] == {"address": "198.51.100.9", "peer": "127.0.0.1"}
    assert checked["input"]["attributes"]["request"]["http"]["headers"][":path"] == "/api/invoices/7"
    assert checked["input"]["attributes"]["request"]["http"]["headers"]["authorization"] != token["authorization"]


def test_context_extensions_and_body_reach_the_policy_input(iam):
    body = json.dumps({"amount": 12})
    headers = {**_bearer(iam), "content-type": "application/json", "content-length": str(len(body)),
               "x-request-id": "with-body"}
    grpc_check(iam.grpc_port, check_request("/envoytest/b", headers, method="POST", body=body, tenant="acme"))
    event = audit_event(iam, "with-body")
    assert event["input"]["parsed_body"] == {"amount": 12}
    assert event["input"]["truncated_body"] is False
    assert event["input"]["attributes"]["contextExtensions"] == {"tenant": "acme"}


def test_a_check_from_an_untrusted_peer_is_refused_and_audited(iam, proxy_factory, tmp_path):
    config = json.loads(json.dumps(iam.config))
    config["listeners"]["proxy"]["port"], config["listeners"]["admin"]["port"] = free_port(), free_port()
    config["audit"] = {"sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl")}]}
    port = free_port()
    config["ext_authz"] = {"grpc": {"host": "127.0.0.1", "port": port}, "trusted_peers": ["10.1.2.3/32"]}
    untrusted = proxy_factory(config, name="untrusted")
    response = grpc_check(port, check_request("/envoytest/a", _bearer(iam)))
    assert response.status.code != code_pb2.OK
    assert response.denied_response.status.code == 404
    assert json.loads(response.denied_response.body)["reason"] == "ext_authz_not_served"
    [event] = untrusted.wait_audit(1)  # refused before the request is even read: no request id
    assert event["outcome"] == "denied" and event["reason"] == "ext_authz_not_served"
    assert event["client"]["peer"] == "127.0.0.1"  # who asked, not whom the check names


def test_the_grpc_listener_takes_mutual_tls(iam, proxy_factory, tmp_path):
    """ext_authz.grpc.tls with client_auth required: Envoy's client certificate opens the channel,
    a client without one does not get a check answered."""
    from x509_pki import PKI

    pki = PKI.create(tmp_path / "pki")
    config = json.loads(json.dumps(iam.config))
    config["listeners"]["proxy"]["port"], config["listeners"]["admin"]["port"] = free_port(), free_port()
    config["audit"] = {"sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl")}]}
    port = free_port()
    config["ext_authz"] = {"trusted_peers": ["127.0.0.1/32"], "grpc": {"host": "127.0.0.1", "port": port, "tls": {
        "cert_file": str(pki.server.cert_path), "key_file": str(pki.server.key_path),
        "client_auth": "required", "client_ca_file": str(pki.ca.path)}}}
    proxy_factory(config, name="mtls")
    root = pki.ca.path.read_bytes()
    envoy = grpc.ssl_channel_credentials(root, pki.good.key_path.read_bytes(), pki.good.cert_path.read_bytes())
    with grpc.secure_channel(f"localhost:{port}", envoy) as channel:
        response = pb_grpc.AuthorizationStub(channel).Check(check_request("/envoytest/a", _bearer(iam)), timeout=5)
    assert headers_of(response.ok_response.headers)["x-forwarded-user"] == "alice"
    with grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(root)) as channel:
        with pytest.raises(grpc.RpcError):
            pb_grpc.AuthorizationStub(channel).Check(check_request("/envoytest/a", _bearer(iam)), timeout=5)
