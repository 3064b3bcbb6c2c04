"""Property: the embedded engine decides the same on the projected input as on the whole input, for
generated policies that read the input in every way Rego allows (paths, import aliases, functions,
template strings, object.get, iteration, every, comprehensions, with) and generated inputs. (A bare
`input`, as in `walk(input, ...)`, hands over the whole document: equal by construction, and left
to test_input_reads.py.)"""

from __future__ import annotations

import asyncio

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from iam_proxy.policy.embedded import EmbeddedEngine, _evaluate
from iam_proxy.policy.source import PolicyLoadError, PolicySource

KEYS = ("a", "b", "c")
leaf = st.one_of(st.integers(0, 2), st.sampled_from(["x", "y"]))
paths = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3)
documents = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
                         max_leaves=12)
inputs = st.dictionaries(st.sampled_from(KEYS), documents, max_size=3)


def rego(value: object) -> str:
    return orjson.dumps(value).decode()


def planted(path: list[str], value: object) -> dict:
    """An input where the rule's path holds its value: the case where reading too little shows."""
    document: object = value
    for key in reversed(path):
        document = {key: document}
    assert isinstance(document, dict)
    return document


@st.composite
def rules(draw: st.DrawFn, i: int) -> tuple[str, str, dict]:
    """(import line or "", rule text, an input that makes it hold) for a boolean rule r<i> reading
    the input one way."""
    path, other, value = draw(paths), draw(paths), draw(leaf)
    ref = "input." + ".".join(path)
    forms = [
        ("", f"r{i} if {ref} == {rego(value)}"),
        (f"import input.{path[0]} as u{i}", f"r{i} if u{i}{''.join('.' + k for k in path[1:])} == {rego(value)}"),
        ("", f"r{i} if f{i}({ref})\n\nf{i}(x) if x == {rego(value)}"),
        ("", f'r{i} if $"{{{ref}}}" == {rego(str(value))}'),
        ("", f"r{i} if object.get(input, {rego(path)}, null) == {rego(value)}"),
        ("", f"r{i} if {{\n\tsome k\n\t{ref}[k] == {rego(value)}\n}}"),
        ("", f"r{i} if count([x | some x in {ref}; x == {rego(value)}]) > 0"),
        ("", f"r{i} if {{\n\tis_array({ref})\n\tevery x in {ref} {{ x != {rego(value)} }}\n}}"),
        ("", f"r{i} if g{i} with input.{'.'.join(other)} as {rego(value)}\n\n"
             f"g{i} if input.{'.'.join(other)} == {ref}"),
    ]
    line, rule = draw(st.sampled_from(forms))
    return line, rule, planted(path, [value] if "some x in" in rule or "[k]" in rule else value)


@st.composite
def policies(draw: st.DrawFn) -> tuple[str, list[dict]]:
    parts = [draw(rules(i)) for i in range(draw(st.integers(2, 5)))]
    imports = "\n".join(sorted({line for line, _, _ in parts if line}))
    defaults = "\n".join(f"default r{i} := false" for i in range(len(parts)))
    decision = "d := {" + ", ".join(f'"r{i}": r{i}' for i in range(len(parts))) + "}"
    text = f"package p\n\n{imports}\n\n{defaults}\n\n" + "\n\n".join(rule for _, rule, _ in parts) + f"\n\n{decision}\n"
    return text, [document for _, _, document in parts]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.lists(inputs, min_size=1, max_size=6))
def test_the_projected_input_decides_as_the_whole_input(policy_and_planted, generated):
    policy, planted_documents = policy_and_planted
    # each planted input also carries generated keys, which the projection must leave out harmlessly
    documents = generated + [{**extra, **doc} for doc, extra in zip(planted_documents, generated * 4)]
    try:
        engine = EmbeddedEngine(None, ["p/d"], source=PolicySource({"p.rego": policy}, {}, "r", ()))
    except PolicyLoadError:
        assume(False)  # a generated form the engine refuses says nothing about the projection
        raise
    compiled = engine._compiled
    for document in documents:
        projected = asyncio.run(engine.decide("p/d", document)).value
        compiled.interpreter.set_input_term(orjson.dumps(document).decode())
        assert projected == _evaluate(compiled.interpreter, compiled.bundle, "p/d"), (policy, document)
