"""Which input values a replayed decision can read: reachable packages, and redacted pointers."""

from __future__ import annotations

from iam_proxy.replay.reach import reachable_modules, reads_for
from iam_proxy.replay.redacted import blocking, can_read, redacted_pointers
from iam_proxy.redaction import changed_pointers

MODULES = {
    "main.rego": "package app.main\nimport data.lib.roles\nallow if roles.admin\nallow if input.identity.sub == \"x\"\n",
    "lib.rego": "package lib.roles\nadmin if \"admin\" in input.identity.roles\n",
    "envoy.rego": "package envoy.authz\nallow if input.attributes.request.http.headers.authorization\n",
    "dyn.rego": "package dyn\nallow if data[input.x]\n",
}


def test_only_the_packages_a_decision_reaches_count():
    assert set(reachable_modules(MODULES, "app/main/allow")) == {"main.rego", "lib.rego"}
    assert reads_for(MODULES, "app/main/allow") == {"identity": {"sub": True, "roles": True}}
    assert set(reachable_modules(MODULES, "dyn/allow")) == set(MODULES)  # data[x] may reach anything


def test_a_redacted_value_blocks_only_a_policy_that_can_read_it():
    reads = {"identity": {"sub": True}, "attributes": {"request": {"http": True}}}
    assert can_read(reads, "/input/identity/sub")
    assert can_read(reads, "/input/attributes/request/http/headers/authorization")
    assert not can_read(reads, "/input/identity/email")
    assert can_read({"identity": True}, "/input/identity/sub") and can_read(None, "/input/anything")
    assert can_read({"a": {"b": {"c": True}}}, "/input/a")  # the policy reads inside the redacted value


def test_events_say_what_they_redacted_and_older_events_are_scanned():
    original = {"h": {"authorization": "Bearer abc", "x-tenant": "t"}, "identity": {"sub": "alice"}}
    shown = {"h": {"authorization": "Bearer ***", "x-tenant": "t"}, "identity": {"sub": "alice"}}
    assert changed_pointers(original, shown) == ["/input/h/authorization"]
    assert redacted_pointers({"input": shown, "input_redacted": ["/input/h/authorization"]}) == ["/input/h/authorization"]
    old_event = {"input": {**shown, "identity": {"sub": "ps:1234", "groups": ["ps:ab"]}}}
    assert redacted_pointers(old_event) == ["/input/h/authorization", "/input/identity/groups", "/input/identity/sub"]
    assert blocking({"identity": {"groups": True}}, old_event) == ["/input/identity/groups"]
    assert blocking({"h": {"x-tenant": True}}, old_event) == []
