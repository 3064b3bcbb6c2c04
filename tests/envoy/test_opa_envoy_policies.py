"""Policies in the form opa-envoy-plugin documents, run unchanged behind the gRPC Check service.

opa-envoy-plugin itself could not be built here (its Go modules are not served), so there is no
differential test against its answers; these cases follow its documented examples instead: the
HS256 token read by the policy itself, `input.parsed_body` of a JSON POST, the `allow` boolean, and
the object result with `headers`, `response_headers_to_add`, `request_headers_to_remove`, `body`,
`http_status` and `dynamic_metadata`."""

from __future__ import annotations

import base64
import json
import time
import warnings

import pytest
from google.protobuf import json_format
from google.rpc import code_pb2
from joserfc import jwt
from joserfc.jwk import OctKey

from envoy_support import check_request, grpc_check, headers_of, start_iam

# the documented example: the policy verifies the token and decides on its role and the request
BOOLEAN_POLICY = """package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

allow if {
	is_token_valid
	action_allowed
}

is_token_valid if {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http_request.method == "GET"
	token.payload.role in {"guest", "admin"}
	glob.match("/people/*", ["/"], http_request.path)
}

action_allowed if {
	http_request.method == "POST"
	token.payload.role == "admin"
	glob.match("/people", ["/"], http_request.path)
	lower(input.parsed_body.firstname) != base64url.decode(token.payload.sub)
}

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}
"""

OBJECT_POLICY = """package envoy.object

import rego.v1

default allow := false

allow if input.attributes.request.http.headers["x-let-me-in"] == "please"

result["allowed"] := allow

result["headers"] := {"x-ext-auth-allow": "yes", "x-ext-auth-user": "guest"} if allow

result["request_headers_to_remove"] := ["x-let-me-in"] if allow

result["response_headers_to_add"] := {"x-ext-auth-seen": "true"} if allow

result["body"] := "Unauthorized Request" if not allow

result["http_status"] := 301 if not allow

result["headers"] := {"location": "https://example.org/login"} if not allow

result["dynamic_metadata"] := {"decided_by": "opa", "path": input.parsed_path}
"""

with warnings.catch_warnings():  # the documented example's secret is short
    warnings.simplefilter("ignore")
    _SECRET = OctKey.import_key(b"secret")

ROUTES = [
    {"id": "people", "match": {"path": "/people/**"}, "authenticators": ["public"],
     "policy": {"path": "envoy/authz/allow"}},
    {"id": "object", "match": {"path": "/object/**"}, "authenticators": ["public"],
     "policy": {"path": "envoy/object/result"}},
]


@pytest.fixture(scope="module")
def iam(upstream, tmp_path_factory):
    # the documented policy replaces the shipped one of the same package
    proxy = start_iam(tmp_path_factory.mktemp("opa-envoy"), upstream,
                      {"envoy/authz.rego": BOOLEAN_POLICY, "envoy/object.rego": OBJECT_POLICY}, ROUTES)
    yield proxy
    proxy.stop()


def _hs256(role: str, sub: str) -> str:
    now = int(time.time())
    claims = {"role": role, "sub": base64.urlsafe_b64encode(sub.encode()).decode().rstrip("="),
              "nbf": now - 5, "exp": now + 600}
    return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, _SECRET)


def _allowed(iam, path: str, role: str | None, method: str = "GET", body: str = "") -> bool:
    headers = {"authorization": f"Bearer {_hs256(role, 'alice')}"} if role else {}
    if body:
        headers.update({"content-type": "application/json", "content-length": str(len(body))})
    response = grpc_check(iam.grpc_port, check_request(path, headers, method=method, body=body))
    return response.status.code == code_pb2.OK


@pytest.mark.parametrize("method,path,role,body,allowed", [
    ("GET", "/people/bob", "guest", "", True),
    ("GET", "/people/bob", "admin", "", True),
    ("GET", "/people/bob", None, "", False),
    ("GET", "/people/bob", "nobody", "", False),
    ("POST", "/people", "guest", json.dumps({"firstname": "Charlie"}), False),
    ("POST", "/people", "admin", json.dumps({"firstname": "Charlie"}), True),
    ("POST", "/people", "admin", json.dumps({"firstname": "Alice"}), False),  # not for oneself
])
def test_the_documented_boolean_policy(iam, method, path, role, body, allowed):
    assert _allowed(iam, path, role, method, body) is allowed


def test_a_token_signed_with_another_secret_is_refused(iam):
    forged = jwt.encode({"alg": "HS256"}, {"role": "admin", "nbf": 0, "exp": int(time.time()) + 60},
                        OctKey.import_key(b"not-the-secret" * 2))
    response = grpc_check(iam.grpc_port, check_request("/people/bob", {"authorization": f"Bearer {forged}"}))
    assert response.denied_response.status.code == 403


def test_the_documented_object_result_when_allowed(iam):
    response = grpc_check(iam.grpc_port, check_request("/object/a/b", {"x-let-me-in": "please"}))
    assert response.status.code == code_pb2.OK
    ok = response.ok_response
    assert headers_of(ok.headers) == {"x-ext-auth-allow": "yes", "x-ext-auth-user": "guest"}
    # the policy's removal, and every identity header the proxy owns (an anonymous caller has none)
    owned = {"x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-forwarded-preferred-username",
             "x-forwarded-access-token", "x-iam-assertion"}
    assert set(ok.headers_to_remove) == {"x-let-me-in", *owned}
    assert headers_of(ok.response_headers_to_add) == {"x-ext-auth-seen": "true"}
    assert json_format.MessageToDict(response.dynamic_metadata) == {"decided_by": "opa", "path": ["object", "a", "b"]}


def test_the_documented_object_result_when_denied(iam):
    response = grpc_check(iam.grpc_port, check_request("/object/a"))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    denied = response.denied_response
    assert denied.status.code == 301
    assert denied.body == "Unauthorized Request"
    assert headers_of(denied.headers)["location"] == "https://example.org/login"
