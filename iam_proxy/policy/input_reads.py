"""Which parts of the input document the policies can read, and the input cut down to those parts.

The full input (opa-envoy-plugin attributes, every request header, the identity, the route) has
about 70 keys, and rego-cpp spends most of a decision parsing it. A policy reads a handful of them.
`input_reads` finds every reference to `input` in the policy sources; `project` keeps only the
subtrees those references start from. Evaluating the projection gives the same decision as the whole
document, because every value a reference can reach is still there, unchanged, and every absent
value is still absent. The same projection keys the decision cache, so two requests that differ
only in what no rule looks at share one entry.

The analysis is deliberately conservative: the static part of a reference (`input.a.b["c"]`) is
kept whole from where it stops being static (`input.a[x]` keeps all of `a`), and a bare `input`
(`x := input`, `walk(input, ...)`, `input[k]`) means the whole document. The one exception is
`object.get(input, <literal key or path>, default)`, a common null-safe read, which reads just that
path. `with input as ...` (tests) replaces the input rather than reading it.
"""

from __future__ import annotations

from typing import Any, Union

from .embedded_lint import Token, tokenize

# A tree of the parts read: key -> subtree, or True for "all of it". None: the whole document.
Reads = Union[dict[str, Any], None]
WHOLE: Reads = None


def _literal(token: Token) -> str | None:
    if token.kind == "string":
        return token.text[1:-1] if "\\" not in token.text else None
    if token.kind == "raw":
        return token.text[1:-1]
    return None


def _static_path(tokens: list[Token], i: int) -> tuple[list[str], int]:
    """The static segments after the `input` at tokens[i]: `.name` and `["literal"]`."""
    path: list[str] = []
    j = i + 1
    while j < len(tokens):
        token = tokens[j]
        if token.text == "." and j + 1 < len(tokens) and tokens[j + 1].kind == "ident":
            path.append(tokens[j + 1].text)
            j += 2
        elif (token.text == "[" and j + 2 < len(tokens) and _literal(tokens[j + 1]) is not None
              and tokens[j + 2].text == "]"):
            path.append(_literal(tokens[j + 1]) or "")
            j += 3
        else:
            break
    return path, j


def _object_get_path(tokens: list[Token], i: int) -> list[str] | None:
    """For `object.get(input, "k", d)` or `object.get(input, ["a", "b"], d)`: the key path read."""
    if i < 4 or [t.text for t in tokens[i - 4:i]] != ["object", ".", "get", "("] or tokens[i - 4].depth != tokens[i].depth - 1:
        return None
    if i + 2 >= len(tokens) or tokens[i + 1].text != ",":
        return None
    key = tokens[i + 2]
    if _literal(key) is not None:
        return [_literal(key) or ""] if i + 3 < len(tokens) and tokens[i + 3].text == "," else None
    if key.text != "[":
        return None
    path: list[str] = []
    j = i + 3
    while j < len(tokens) and _literal(tokens[j]) is not None:
        path.append(_literal(tokens[j]) or "")
        j += 1
        if tokens[j].text == ",":
            j += 1
        elif tokens[j].text == "]":
            break
        else:
            return None
    if not path or j + 1 >= len(tokens) or tokens[j].text != "]" or tokens[j + 1].text != ",":
        return None
    return path


def _add(tree: dict[str, Any], path: list[str]) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if child is True:
            return
        node = node.setdefault(key, {})
    node[path[-1]] = True


def input_reads(modules: dict[str, str]) -> Reads:
    """The parts of the input the modules can read, or WHOLE."""
    tree: dict[str, Any] = {}
    for text in modules.values():
        tokens = tokenize(text)
        for i, token in enumerate(tokens):
            if token.text == "$" and i + 1 < len(tokens) and tokens[i + 1].kind in ("string", "raw"):
                return WHOLE  # a template string (`$"{input.user}"`) holds code the token scan cannot see
            if token.kind != "ident" or token.text != "input":
                continue
            if i > 0 and tokens[i - 1].text == "." or i > 0 and tokens[i - 1].text == "with":
                continue  # `x.input` is some other object's key; `with input as` replaces the input
            path, _ = _static_path(tokens, i)
            if not path:
                path = _object_get_path(tokens, i) or []
            if not path:
                return WHOLE
            _add(tree, path)
    return tree


def project(document: dict[str, Any], reads: Reads) -> dict[str, Any]:
    """`document` cut down to `reads` (the document itself for WHOLE)."""
    if reads is None:
        return document
    return _project(document, reads)


def _project(document: dict[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, subtree in tree.items():
        if key not in document:
            continue
        value = document[key]
        out[key] = _project(value, subtree) if subtree is not True and isinstance(value, dict) else value
    return out
