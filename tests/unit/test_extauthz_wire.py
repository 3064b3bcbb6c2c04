"""The ext_authz wire mapping without a server: Envoy's CheckRequest -> Check, Verdict -> CheckResponse
(stubs of Envoy's published protos), the HTTP mode's answer, and opa-envoy-plugin's body rule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from google.protobuf import json_format
from google.rpc import code_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envoy"))
from envoy_support import check_request, headers_of  # noqa: E402

from iam_proxy.errors import BadRequest  # noqa: E402
from iam_proxy.extauthz.check import Check, Verdict  # noqa: E402
from iam_proxy.extauthz.envoy_input import add_envoy_fields, parsed_body  # noqa: E402
from iam_proxy.extauthz.grpc_service import check_of, peer_address, response_of  # noqa: E402
from iam_proxy.extauthz.http_service import _answer  # noqa: E402


def test_a_check_request_becomes_a_check():
    request = check_request("/a/b?x=1", {"authorization": "Bearer t", "X-Mixed": "v"}, method="POST",
                            client="198.51.100.4", body='{"a": 1}', tenant="acme")
    check = check_of(request, "127.0.0.1")
    assert (check.method, check.host, check.path, check.client, check.via) == \
        ("POST", "app.test", "/a/b?x=1", "198.51.100.4", "127.0.0.1")
    assert check.header("authorization") == "Bearer t" and check.header("x-mixed") == "v"
    assert check.header(":path") == "/a/b?x=1"
    assert check.body == b'{"a": 1}'
    assert check.attributes["contextExtensions"] == {"tenant": "acme"}
    assert check.attributes["source"]["address"]["socketAddress"]["address"] == "198.51.100.4"


@pytest.mark.parametrize("peer,address", [("ipv4:127.0.0.1:5000", "127.0.0.1"), ("ipv6:[::1]:5000", "::1"),
                                          ("unix:/tmp/s", "")])
def test_peer_address(peer, address):
    assert peer_address(peer) == address


def test_an_allowed_verdict_overwrites_first_and_appends_repeats():
    verdict = Verdict(True, 200, "d", upstream_headers=[("x-forwarded-user", "alice"), ("x-tag", "a"), ("x-tag", "b")],
                      remove_headers=["authorization"], client_headers=[("set-cookie", "s=1")],
                      dynamic_metadata={"k": ["v"]})
    response = response_of(verdict)
    assert response.status.code == code_pb2.OK
    actions = [(h.header.key, h.append_action) for h in response.ok_response.headers]
    overwrite, append = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD, HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    assert actions == [("x-forwarded-user", overwrite), ("x-tag", overwrite), ("x-tag", append)]
    assert list(response.ok_response.headers_to_remove) == ["authorization"]
    assert headers_of(response.ok_response.response_headers_to_add) == {"set-cookie": "s=1"}
    assert json_format.MessageToDict(response.dynamic_metadata) == {"k": ["v"]}


@pytest.mark.parametrize("status,code", [(401, code_pb2.UNAUTHENTICATED), (403, code_pb2.PERMISSION_DENIED),
                                         (503, code_pb2.PERMISSION_DENIED)])
def test_a_refusal_is_a_denied_response(status, code):
    response = response_of(Verdict(False, status, "d", client_headers=[("www-authenticate", "Bearer")], body=b"no"))
    assert response.status.code == code
    assert response.denied_response.status.code == status and response.denied_response.body == "no"
    assert not response.HasField("ok_response")


def test_the_http_answer_names_the_headers_to_remove():
    status, headers, body = _answer(Verdict(True, 200, "d", upstream_headers=[("x-forwarded-user", "alice")],
                                            remove_headers=["authorization", "x-secret"]))
    assert status == 200 and body == b""
    assert (b"x-envoy-auth-headers-to-remove", b"authorization, x-secret") in headers
    denied = _answer(Verdict(False, 418, "d", client_headers=[("x-why", "tea")], body=b"teapot"))
    assert denied == (418, [(b"x-why", b"tea")], b"teapot")


def _check(body: bytes, **headers: str) -> Check:
    return Check(method="POST", host="h", path="/", headers=list(headers.items()), client="c", via="v", body=body)


@pytest.mark.parametrize("check,expected", [
    (_check(b'{"a": 1}', **{"content-type": "application/json"}), ({"a": 1}, False)),
    (_check(b'{"a": 1}', **{"content-type": "application/json", "content-length": "100"}), (None, True)),
    (_check(b"a=1", **{"content-type": "application/x-www-form-urlencoded"}), (None, False)),
    (_check(b"", **{"content-type": "application/json"}), (None, False)),
])
def test_parsed_body_follows_opa_envoy_plugin(check, expected):
    assert parsed_body(check) == expected


def test_a_body_that_is_not_the_json_it_claims_refuses():
    with pytest.raises(BadRequest):
        parsed_body(_check(b"{not json", **{"content-type": "application/json"}))


def test_the_proxy_s_own_input_values_win():
    ours = {"attributes": {"request": {"http": {"headers": {"authorization": "***"}}},
                           "source": {"address": {"socketAddress": {"address": "1.2.3.4"}}}}}
    check = Check(method="GET", host="h", path="/", headers=[], client="c", via="v", attributes={
        "request": {"http": {"headers": {"authorization": "Bearer secret"}}},
        "source": {"address": {"socketAddress": {"address": "9.9.9.9", "portValue": 4}}, "principal": "spiffe://x"},
        "contextExtensions": {"k": "v"}})
    add_envoy_fields(ours, check)
    assert ours["attributes"]["request"]["http"]["headers"] == {"authorization": "***"}
    assert ours["attributes"]["source"] == {"address": {"socketAddress": {"address": "1.2.3.4", "portValue": 4}},
                                            "principal": "spiffe://x"}
    assert ours["attributes"]["contextExtensions"] == {"k": "v"}
    assert ours["parsed_body"] is None and ours["truncated_body"] is False
