"""Renderers: ECS, CEF, OCSF and native, with hostile identity values."""

from __future__ import annotations

import json

import pytest

from audit_sample import sample_event
from iam_proxy.audit.render import render, to_bytes
from iam_proxy.audit.render.cef import escape_extension, escape_header

HOSTILE = "mallory\r\nCEF:0|forged|x\u2028y\u2029z\x1b[2J\"quoted\" a=b \\ |pipe|"


def test_cef_escaping_rules():
    assert escape_header("a|b\\c") == "a\\|b\\\\c"
    assert escape_extension("a=b\\c\nd\re|f") == "a\\=b\\\\c\\nd\\re|f"
    assert escape_extension("x\x1by\u2028") == "x\\\\u001by\\\\u2028"
    assert "\n" not in escape_header("a\nb")


@pytest.mark.parametrize("fmt", ["native", "ecs", "ocsf", "cef"])
def test_hostile_identity_values_stay_one_record(fmt):
    event = sample_event(identity={"username": HOSTILE, "sub": HOSTILE, "email": HOSTILE, "groups": [HOSTILE]},
                         http={"path": "/a\nb", "user_agent": HOSTILE})
    data = to_bytes(render(event, fmt))
    text = data.decode("utf-8")
    assert len(text.splitlines()) == 1  # str.splitlines() also splits on U+2028/2029, VT, FF, ...
    assert "\x1b" not in text and "\r" not in text and "\n" not in text
    if fmt != "cef":
        assert _contains(json.loads(data), HOSTILE)  # the value survives intact inside the JSON


def _contains(node, value) -> bool:
    if isinstance(node, dict):
        return any(_contains(v, value) for v in node.values())
    if isinstance(node, list):
        return any(_contains(v, value) for v in node)
    return node == value


def test_cef_header_and_extension():
    line = render(sample_event(identity={"username": HOSTILE}), "cef")
    fields = line.split("|")
    assert fields[:4] == ["CEF:0", "iam-proxy", "iam-proxy", fields[3]]
    assert fields[5] == "GET allowed allowed" and fields[6].startswith("3")
    assert "suser=mallory\\r\\nCEF:0|forged|x\\\\u2028y\\\\u2029z\\\\u001b[2J\"quoted\" a\\=b \\\\ |pipe|" in line
    assert "cs1Label=route cs1=api" in line and "cn1Label=httpStatus cn1=200" in line


def test_ecs_field_names():
    doc = render(sample_event(), "ecs")
    assert doc["@timestamp"] == "2026-11-26T05:00:00.123456Z"
    assert doc["event"]["id"] and doc["event"]["outcome"] == "success" and doc["event"]["kind"] == "event"
    assert doc["user"] == {"id": "alice", "name": "alice", "email": "alice@example.org"}
    assert doc["source"]["ip"] == "192.0.2.10" and doc["http"]["response"]["status_code"] == 200
    assert doc["url"]["path"] == "/api/invoices/1" and doc["event"]["duration"] == 2_500_000
    denied = render(sample_event(outcome="denied", reason="credential_missing", status=401, identity=None), "ecs")
    assert denied["event"]["outcome"] == "failure" and "authentication" in denied["event"]["category"]


def test_ocsf_classes():
    api = render(sample_event(http={"method": "DELETE"}), "ocsf")
    assert (api["class_uid"], api["category_uid"], api["activity_id"], api["type_uid"]) == (6003, 6, 4, 600304)
    assert api["severity_id"] == 1 and api["status_id"] == 1 and api["metadata"]["uid"]
    assert api["time"] == 1795669200123  # 2026-11-26T05:00:00.123Z in ms
    denied = render(sample_event(outcome="denied", reason="policy_denied", status=403), "ocsf")
    assert denied["class_uid"] == 6003 and denied["severity_id"] == 2 and denied["unmapped"]["disposition"] == "Blocked"
    login = render(sample_event(outcome="denied", reason="token_expired", status=401), "ocsf")
    assert (login["class_uid"], login["category_uid"], login["activity_id"], login["type_uid"]) == (3002, 3, 1, 300201)
    assert login["status"] == "Failure" and login["status_detail"] == "token_expired" and login["severity_id"] == 3
    error = render(sample_event(outcome="error", reason="upstream_unavailable", status=502), "ocsf")
    assert error["severity_id"] == 4


def test_non_string_keys_are_written_as_strings():
    """Most events have only string keys and take orjson's fast path; one that does not is still written."""
    assert to_bytes({"facts": {1: "a", "b": [2]}}) == b'{"facts":{"1":"a","b":[2]}}'
    assert to_bytes({"facts": {"1": "a", "b": [2]}}) == b'{"facts":{"1":"a","b":[2]}}'
