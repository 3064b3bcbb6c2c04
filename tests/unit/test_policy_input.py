"""The policy input document: opa-envoy-plugin's shape, plus identity and route, minus secrets."""

from __future__ import annotations

from iam_proxy.core.identity import Identity
from iam_proxy.context import context_from_scope
from iam_proxy.policy.input import build_input


def scope(path: bytes = b"/api/people/al%20ice", query: bytes = b"a=1&a=2&b=", headers=()) -> dict:
    return {"type": "http", "method": "GET", "scheme": "https", "path": path.decode(), "raw_path": path,
            "query_string": query, "http_version": "1.1", "client": ("203.0.113.9", 5555),
            "headers": [(b"host", b"api.example"), *headers]}


def test_envoy_shaped_fields():
    ctx = context_from_scope(scope(headers=[(b"X-Custom", b"v"), (b"x-custom", b"w")]))
    ctx.identity = Identity(sub="alice", method="jwt", groups=("finance",))
    data = build_input(ctx)
    http = data["attributes"]["request"]["http"]
    assert http["method"] == "GET" and http["host"] == "api.example" and http["scheme"] == "https"
    assert http["path"] == "/api/people/al%20ice?a=1&a=2&b="
    assert http["query"] == "a=1&a=2&b="
    assert http["headers"]["x-custom"] == "v, w"  # lower-case names, repeated headers joined
    assert data["parsed_path"] == ["api", "people", "al ice"]
    assert data["parsed_query"] == {"a": ["1", "2"], "b": [""]}
    assert data["attributes"]["source"]["address"]["socketAddress"]["address"] == "203.0.113.9"
    assert data["identity"]["sub"] == "alice" and data["identity"]["groups"] == ["finance"]


def test_credentials_the_proxy_consumed_are_masked_but_bearer_tokens_stay():
    ctx = context_from_scope(scope(headers=[(b"authorization", b"Basic YWxpY2U6c2VjcmV0"),
                                            (b"x-api-key", b"iak_1_secret")]))
    ctx.consumed_headers.update({"authorization", "x-api-key"})
    headers = build_input(ctx)["attributes"]["request"]["http"]["headers"]
    assert headers["authorization"] == "Basic ***"
    assert headers["x-api-key"] == "***"

    bearer = context_from_scope(scope(headers=[(b"authorization", b"Bearer a.b.c")]))
    # opa-envoy-plugin policies decode the bearer token themselves (io.jwt.decode), so it stays
    assert build_input(bearer)["attributes"]["request"]["http"]["headers"]["authorization"] == "Bearer a.b.c"
