"""The edge, proxy mode (issue 13 items 1, 2, 9): what a hostile client sends must not reach a
backend. Every request is written byte for byte on a socket, and a recording upstream answers with
the exact head it received, so nothing on either side normalises what is checked.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from rawhttp import RecordingUpstream, request_bytes, send_raw
from support import audit_event, base_config, copy_policies

EDGE_POLICY = """package edgetest

import rego.v1

method := input.attributes.request.http.method

path := input.attributes.request.http.path

default decision := {"allowed": false, "reasons": ["edgetest: not allowed"]}

decision := {"allowed": true, "reasons": ["read"]} if {
	startswith(path, "/mo/")
	method == "GET"
}

decision := {
	"allowed": true,
	"headers": {"Content-Length": "0", "Transfer-Encoding": "chunked", "Connection": "close",
	            "Host": "evil.example", "X-Forwarded-User": "mallory", "X-Policy": "ok"},
	"response_headers_to_add": {"Content-Length": "5", "Transfer-Encoding": "chunked", "X-Policy-Resp": "yes"},
} if startswith(path, "/ph/")

decision := {
	"allowed": false, "http_status": 409, "reasons": ["conflict"],
	"headers": {"Content-Length": "1", "Transfer-Encoding": "chunked", "X-Deny": "why"},
} if startswith(path, "/deny/")
"""

TRUSTED = "127.0.0.3"


@pytest.fixture(scope="module")
def recorder():
    upstream = RecordingUpstream(response_headers=[(b"X-Iam-Assertion", b"echoed-by-the-upstream")])
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def edge(recorder, tmp_path_factory):
    from support import DevIssuer, ProxyProcess

    tmp = tmp_path_factory.mktemp("edge")
    policies = copy_policies(tmp / "policies", {"edgetest/edgetest.rego": EDGE_POLICY})
    issuer = DevIssuer(tmp / "issuer")
    config = base_config(recorder.url, issuer.jwks_path, tmp / "audit.jsonl", policies)
    config["listeners"]["trusted_proxies"] = [f"{TRUSTED}/32"]
    config["identity_headers"] = {"spoofable": ["X-Acme-User", "X-Partner-*"]}
    public = config["routes"][1]
    edge_route = {"upstream": recorder.url, "authenticators": ["bearer"], "policy": {"path": "edgetest/decision"}}
    config["routes"] += [
        {**edge_route, "id": "mo", "match": {"path": "/mo/**"}, "method_override": True},
        {**edge_route, "id": "ph", "match": {"path": "/ph/**"}},
        {**edge_route, "id": "deny", "match": {"path": "/deny/**"}},
        {**public, "id": "svc", "match": {"path": "/svc*/**"}, "strip_prefix": "/svc"},
        {**public, "id": "pass", "match": {"path": "/pass/**"}, "pass_authorization": True, "pass_access_token": True,
         "assertion_audience": "https://billing.internal"},
    ]
    proxy = ProxyProcess(config, tmp).wait_ready()
    proxy.issuer = issuer
    yield proxy
    proxy.stop()


def _get(proxy, target: str, headers: list, method: str = "GET", source: str | None = None):
    return send_raw(proxy.port, request_bytes(method, target, headers), source=source)


def _bearer(proxy, sub: str = "alice", groups=("finance",)) -> tuple[str, str]:
    return ("Authorization", f"Bearer {proxy.issuer.token(sub, list(groups))}")


SPOOFED = [
    "X-Forwarded-User", "x_forwarded_user", "X.Forwarded.User", "X-FORWARDED-EMAIL", "X_Forwarded_Email",
    "X-Forwarded-Preferred-Username", "X-Forwarded-Roles", "X-Forwarded-Groups", "Remote-User", "Remote_User",
    "X-Remote-User", "Remote-Groups", "Remote-Email", "X-Auth-Request-User", "X-Auth-Request-Email",
    "X-Pomerium-Claim-Email", "X-Pomerium-Jwt-Assertion", "X-Forwarded-Client-Cert", "Ssl-Client-Cert",
    "X-Iam-Assertion", "X-Amzn-Oidc-Identity", "X-Ms-Client-Principal-Name", "X-Webauth-User", "X-User",
    "X-Acme-User", "x_acme_user", "X-Partner-Tenant", "X-Forwarded-Access-Token", "Cf-Access-Jwt-Assertion",
]


def test_identity_headers_from_the_client_never_reach_the_upstream(edge):
    spoofed = [(name, f"mallory-{i}") for i, name in enumerate(SPOOFED)]
    r = _get(edge, "/public/x", [_bearer(edge), *spoofed])
    assert r.status == 200, r.body
    head = r.upstream_head()
    assert b"mallory" not in r.body, head.headers
    assert head.get("X-Forwarded-User") == b"alice"
    assert head.get("X-Forwarded-Email") == b"alice@example.org"


def test_names_with_underscores_or_dots_are_dropped(edge):
    r = _get(edge, "/public/x", [("X_Tenant", "t1"), ("X.Tenant", "t2"), ("X-Tenant", "t3")])
    head = r.upstream_head()
    assert head.get("X-Tenant") == b"t3"
    assert {"x_tenant", "x.tenant"}.isdisjoint(head.names())


def test_underscored_names_can_be_kept_but_never_as_identity(proxy_factory, proxy_config):
    proxy_config["identity_headers"] = {"keep_underscored_names": True}
    proxy = proxy_factory(proxy_config)
    r = send_raw(proxy.port, request_bytes("GET", "/public/x", [("X_Tenant", "t1"), ("X_Forwarded_User", "mallory")]))
    echoed = {k.lower(): v for k, v in json.loads(r.body)["header_list"]}
    assert echoed["x_tenant"] == "t1"
    assert "x_forwarded_user" not in echoed


def test_credentials_and_the_session_cookie_stay_at_the_proxy(edge):
    cookie = "__Host-iam_session=" + "s" * 2300 + "; theme=dark; __Host-iam_oidc_login=x; iam_saml_login=y"
    r = _get(edge, "/public/x", [_bearer(edge), ("Cookie", cookie)])
    head = r.upstream_head()
    assert head.get("Cookie") == b"theme=dark"
    assert head.get("Authorization") is None
    assert head.get("X-Forwarded-Access-Token") is None


def test_a_route_may_pass_the_authorization_header_and_the_access_token(edge):
    name, value = _bearer(edge)
    head = _get(edge, "/pass/x", [(name, value)]).upstream_head()
    assert head.get("Authorization") == value.encode()
    assert head.get("X-Forwarded-Access-Token") == value.split(" ", 1)[1].encode()


@pytest.mark.parametrize("name", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override",
                                  "x_http_method_override"])
def test_method_overrides_are_dropped_by_default(edge, name):
    r = _get(edge, "/public/x", [(name, "DELETE")], method="POST")
    head = r.upstream_head()
    assert head.method == b"POST"
    assert b"DELETE" not in r.body


def test_on_an_opted_in_route_the_policy_decides_on_the_overridden_method(edge):
    denied = _get(edge, "/mo/x", [_bearer(edge), ("X-HTTP-Method-Override", "DELETE")])
    assert denied.status == 403
    allowed = _get(edge, "/mo/x", [_bearer(edge), ("X-HTTP-Method-Override", "get")])
    assert allowed.status == 200
    assert allowed.upstream_head().get("X-HTTP-Method-Override") == b"get"
    bad = _get(edge, "/mo/x", [_bearer(edge), ("X-HTTP-Method-Override", "DEL ETE")])
    assert bad.status == 400


@pytest.mark.parametrize("target, upstream_target", [("/svc/v1/x", b"/v1/x"), ("/svcv2/x", b"/svcv2/x"),
                                                      ("/svc", b"/")])
def test_strip_prefix_works_on_whole_segments(edge, target, upstream_target):
    head = _get(edge, target + ("/" if target == "/svc" else ""), []).upstream_head()
    assert head.target == upstream_target


def test_a_policy_never_sets_framing_hop_by_hop_or_identity_headers(edge):
    r = _get(edge, "/ph/x", [_bearer(edge)])
    assert r.status == 200
    head = r.upstream_head()
    assert head.get("X-Policy") == b"ok"
    assert head.get("X-Forwarded-User") == b"alice"
    assert head.get("Content-Length") is None and head.get("Transfer-Encoding") is None
    assert head.get("Host") == f"127.0.0.1:{edge.config['routes'][0]['upstream'].rsplit(':', 1)[1]}".encode()
    assert r.header("X-Policy-Resp") == b"yes"
    assert r.all("Content-Length") == [str(len(r.body)).encode()]
    assert r.header("Transfer-Encoding") is None


def test_a_deny_response_never_sets_framing_headers(edge):
    r = _get(edge, "/deny/x", [_bearer(edge)])
    assert r.status == 409
    assert r.header("X-Deny") == b"why"
    assert r.all("Content-Length") == [str(len(r.body)).encode()]
    assert r.header("Transfer-Encoding") is None
    assert json.loads(r.body)["reasons"] == ["conflict"]


def test_header_values_outside_ascii_are_forwarded_byte_for_byte(edge):
    value = b"caf\xe9 \xc3\xa9 \xff"
    head = _get(edge, "/public/x", [(b"X-Note", value)]).upstream_head()
    assert head.get("X-Note") == value
    raw = request_bytes("GET", "/public/x", [], host="caf\xe9.test")
    assert send_raw(edge.port, raw).upstream_head().get("X-Forwarded-Host") == b"caf\xe9.test"


def test_the_assertion_is_never_handed_back_to_the_client(edge):
    r = _get(edge, "/public/x", [_bearer(edge)])
    assert r.upstream_head().get("X-Iam-Assertion")  # the upstream got one ...
    assert r.header("X-Iam-Assertion") is None  # ... and its echo stays at the proxy


def test_merged_slashes_are_what_the_route_policy_and_upstream_see(edge):
    r = _get(edge, "/api//invoices/1", [_bearer(edge)])
    assert r.status == 200, r.body
    assert r.upstream_head().target == b"/api/invoices/1"


def test_the_client_address_is_the_first_untrusted_hop(edge):
    spoofed = _get(edge, "/public/x", [("X-Forwarded-For", "6.6.6.6"), ("X-Request-Id", "xff-untrusted")])
    assert spoofed.upstream_head().get("X-Forwarded-For") == b"127.0.0.1"
    via = _get(edge, "/public/x", [("X-Forwarded-For", "6.6.6.6, 10.1.2.3"), ("X-Request-Id", "xff-trusted")],
               source=TRUSTED)
    assert via.status == 200
    assert audit_event(edge, "xff-untrusted")["client"]["address"] == "127.0.0.1"
    assert audit_event(edge, "xff-trusted")["client"]["address"] == "10.1.2.3"


# ---------------------------------------------------------------- token claims (item 4)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _signed(proxy, claims: dict, **header) -> str:
    """Signed by hand: joserfc refuses to even write some of these tokens, attackers do not."""
    from joserfc.jws import JWSRegistry

    kid, key = next(iter(proxy.issuer.keys.items()))
    signing_input = _b64(json.dumps({"alg": "RS256", "kid": kid, "typ": "JWT", **header}).encode()) + b"." \
        + _b64(json.dumps(claims).encode())
    return (signing_input + b"." + _b64(JWSRegistry.algorithms["RS256"].sign(signing_input, key))).decode()


def _claims(proxy, **overrides):
    now = int(time.time())
    return {"iss": proxy.issuer.issuer, "aud": "iam-proxy", "sub": "alice", "iat": now, "nbf": now,
            "exp": now + 600, "groups": ["finance"], **overrides}


@pytest.mark.parametrize("overrides, reason", [
    ({"exp": "2999999999"}, "token_claim_invalid"),
    ({"exp": 1e300}, "token_claim_invalid"),
    ({"exp": 2 ** 70}, "token_claim_invalid"),
    ({"nbf": -5}, "token_claim_invalid"),
    ({"iat": True}, "token_claim_invalid"),
    ({"iat": "now"}, "token_claim_invalid"),
    ({"iat": int(time.time()) + 3600}, "token_issued_in_future"),
    ({"exp": int(time.time()) + 2 * 86400}, "token_lifetime_too_long"),
    ({"iat": None, "nbf": None, "exp": int(time.time()) + 2 * 86400}, "token_lifetime_too_long"),
])
def test_token_times_must_be_sane_numbers_and_lifetimes_bounded(edge, overrides, reason):
    claims = {k: v for k, v in _claims(edge, **overrides).items() if v is not None}
    r = _get(edge, "/public/x", [("Authorization", f"Bearer {_signed(edge, claims)}")])
    assert r.status == 401, r.body
    assert json.loads(r.body)["reason"] == reason


def test_a_token_within_the_lifetime_bound_passes(edge):
    claims = _claims(edge, exp=int(time.time()) + 86400 - 60)
    assert _get(edge, "/public/x", [("Authorization", f"Bearer {_signed(edge, claims)}")]).status == 200


@pytest.mark.parametrize("header", [{"crit": ["exp"]}, {"zip": "DEF"}, {"jku": "https://evil.example/jwks"},
                                    {"jwk": {"kty": "oct", "k": "AA"}}, {"x5u": "https://evil.example/c"}])
def test_tokens_asking_for_unsupported_or_untrusted_header_processing_are_refused(edge, header):
    token = _signed(edge, _claims(edge), **header)
    r = _get(edge, "/public/x", [("Authorization", f"Bearer {token}")])
    assert r.status == 401, r.body
    assert json.loads(r.body)["reason"] == "token_header_refused"


def _assertion_audience(head) -> str:
    body = head.get("X-Iam-Assertion").split(b".")[1]
    return json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))["aud"]


def test_the_assertion_audience_is_per_route(edge):
    assert _assertion_audience(_get(edge, "/public/x", [_bearer(edge)]).upstream_head()) == "public"
    assert _assertion_audience(_get(edge, "/pass/x", [_bearer(edge)]).upstream_head()) == "https://billing.internal"
