"""What the policies can read of the input, and the input cut down to it."""

from __future__ import annotations

from iam_proxy.policy.input_reads import WHOLE, input_reads, project


def reads(body: str):
    return input_reads({"p.rego": f"package p\n\nimport rego.v1\n\n{body}\n"})


def test_static_references_keep_their_subtrees():
    assert reads('allow if {\n\tinput.identity.sub == "alice"\n\tinput.attributes.request.http.headers["x-a"] == "1"\n}') == {
        "identity": {"sub": True}, "attributes": {"request": {"http": {"headers": {"x-a": True}}}}}


def test_a_dynamic_step_keeps_everything_below_the_static_part():
    assert reads("allow if input.identity.groups[_] == \"admins\"") == {"identity": {"groups": True}}
    assert reads("allow if some k, v in input.route.labels") == {"route": {"labels": True}}
    assert reads("allow if input.parsed_path[0] == \"api\"") == {"parsed_path": True}


def test_a_shorter_reference_wins_over_a_longer_one():
    assert reads("a if input.identity.sub\nb if count(input.identity) > 1") == {"identity": True}
    assert reads("b if count(input.identity) > 1\na if input.identity.sub") == {"identity": True}


def test_a_bare_input_means_the_whole_document():
    assert reads("doc := input") is WHOLE
    assert reads("allow if walk(input, [p, v])") is WHOLE
    assert reads("allow if input[k] == 1") is WHOLE
    assert reads("allow if f(input)\n\nf(x) if x.a") is WHOLE
    assert reads("import input\n\nallow if input.a") == {"a": True}


def test_object_get_with_a_literal_path_reads_that_path():
    assert reads('g := object.get(input, ["identity", "groups"], [])') == {"identity": {"groups": True}}
    assert reads('g := object.get(input, "route", {})') == {"route": True}
    assert reads("g := object.get(input, key, {})") is WHOLE


def test_import_aliases_are_references_too():
    assert reads("import input.attributes.request.http as http\n\nallow if http.method == \"GET\"") == {
        "attributes": {"request": {"http": {"method": True}}}}
    assert reads("import input.identity as u\n\nallow if count(u) > 1") == {"identity": True}
    assert reads("import input.identity\n\nallow if identity.sub == \"a\"") == {"identity": {"sub": True}}


def test_functions_heads_with_values_and_every_are_references_too():
    assert reads("f(x) := input.a[x]\n\nallow if f(1)") == {"a": True}
    assert reads("p[input.k] := 1") == {"k": True}
    assert reads("allow if every x in input.xs { x > input.min }") == {"xs": True, "min": True}
    assert reads("allow if g with input.b as input.c\n\ng if input.d") == {"c": True, "d": True}
    assert reads("s := {x | some x in input.ys}") == {"ys": True}


def test_strings_comments_other_objects_and_with_targets_are_not_reads():
    text = ('# input is not read here\nmsg := "input"\nx := data.input.y\n'
            'test_t if allow with input as {"a": 1}\nallow if input.a == 1')
    assert reads(text) == {"a": True}


def test_projection_keeps_read_values_unchanged_and_absent_ones_absent():
    document = {"identity": {"sub": "alice", "email": "a@x", "groups": ["g"]}, "route": None,
                "attributes": {"request": {"http": {"method": "GET", "headers": {"a": "1", "b": "2"}}}}}
    tree = {"identity": {"sub": True, "tenant": True}, "route": {"labels": True},
            "attributes": {"request": {"http": {"headers": True}}}, "parsed_path": True}
    assert project(document, tree) == {"identity": {"sub": "alice"}, "route": None,
                                       "attributes": {"request": {"http": {"headers": {"a": "1", "b": "2"}}}}}
    assert project(document, WHOLE) is document


def test_a_read_inside_a_template_string_is_seen():
    # `input` inside `$"{...}"` is a read: handing the engine less would let mallory through below
    assert reads('deny if $"{input.user}" == "mallory"\nallow if not deny') == {"user": True}
    assert reads('deny if $"{input.a} {object.get(input, "b", 1)}" == "x"') == {"a": True, "b": True}


def test_the_embedded_engine_denies_through_a_template_string(tmp_path):
    import asyncio

    from iam_proxy.policy.embedded import EmbeddedEngine

    (tmp_path / "t.rego").write_text('package t\n\ndeny if $"{input.user}" == "mallory"\n\nallow if not deny\n')
    engine = EmbeddedEngine(tmp_path, ["t/allow", "t/deny"])
    decide = lambda user: asyncio.run(engine.decide("t/deny", {"user": user, "other": 1})).value  # noqa: E731
    assert decide("mallory") is True
    assert asyncio.run(engine.decide("t/allow", {"user": "alice"})).value is True
