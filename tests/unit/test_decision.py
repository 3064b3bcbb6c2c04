from __future__ import annotations

import pytest

from iam_proxy.policy.decision import MalformedDecision, parse_decision


@pytest.mark.parametrize("value, allowed", [
    (True, True), (False, False),
    ({"allowed": True}, True),
    ({"allowed": False, "reasons": ["no"], "http_status": 451, "body": "nope"}, False),
    ({"allowed": True, "headers": {"x-a": "1", "x-b": ["2", "3"]}, "dynamic_metadata": {}}, True),
])
def test_well_formed(value, allowed):
    assert parse_decision(value).allowed is allowed


@pytest.mark.parametrize("value", [
    None, "true", 1, [], {}, {"allowed": "true"}, {"allowed": 1}, {"result": True},
    {"allowed": True, "reasons": "x"}, {"allowed": False, "http_status": "403"},
    {"allowed": False, "http_status": 99}, {"allowed": True, "headers": {"x": 1}},
    {"allowed": True, "headers": {"x": "a\r\nSet-Cookie: y"}}, {"allowed": True, "body": {}},
])
def test_malformed_is_an_error_never_a_default(value):
    with pytest.raises(MalformedDecision):
        parse_decision(value)


def test_fields_are_carried():
    d = parse_decision({"allowed": False, "reasons": ["r1"], "http_status": 429,
                        "request_headers_to_remove": ["x-debug"], "response_headers_to_add": {"retry-after": "5"}})
    assert (d.reasons, d.http_status, d.request_headers_to_remove, d.response_headers_to_add) == (
        ("r1",), 429, ("x-debug",), {"retry-after": "5"})
