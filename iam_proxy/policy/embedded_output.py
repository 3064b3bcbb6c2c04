"""Reading a rego-cpp result from its node tree, never from its JSON text.

rego-cpp's JSON text is not trustworthy: some built-ins (trim_space, concat inside sprintf, ...)
return strings with their quotes unescaped, so the text of `{"allowed": false, "reasons": [s]}`
can contain `"], "allowed": true, "z": ["` and a JSON parser then reads a different decision.
The node tree keeps the structure the policy built; each string's content is decoded on its own,
and a string that is not valid escaped text fails the evaluation (the proxy denies).
"""

from __future__ import annotations

import json
from typing import Any

from regopy.rego_shared import (
    NodeKind,
    rego_node_get,
    rego_node_size,
    rego_node_type,
    rego_node_value,
    rego_output_node,
)

from .engine import PolicyEvaluationError, UndefinedDecision


def _child(node: Any, index: int) -> Any:
    return rego_node_get(node, index)


def _string(node: Any) -> str:
    """rego-cpp holds a string either as a JSON literal with its quotes or as escaped content without."""
    text = rego_node_value(node)
    literal = text if len(text) >= 2 and text[0] == '"' and text[-1] == '"' else f'"{text}"'
    try:
        value = json.loads(literal)
    except json.JSONDecodeError:
        raise PolicyEvaluationError("engine returned a string it did not escape") from None
    if not isinstance(value, str):
        raise PolicyEvaluationError("engine returned a string it did not escape")
    return value


def _order(value: Any) -> tuple:
    """OPA's order of values, used for set elements: null, booleans, numbers, strings, arrays, objects."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, (int, float)):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, list):
        return (4, tuple(_order(v) for v in value))
    return (5, tuple((k, _order(v)) for k, v in sorted(value.items())))


def _value(node: Any) -> Any:
    kind = rego_node_type(node)
    if kind in (NodeKind.Term, NodeKind.Scalar):
        return _value(_child(node, 0))
    if kind == NodeKind.String:
        return _string(node)
    if kind in (NodeKind.Int, NodeKind.Float):
        return json.loads(rego_node_value(node))
    if kind in (NodeKind.Boolean, NodeKind.True_, NodeKind.False_):
        return rego_node_value(node) == "true"
    if kind == NodeKind.Null:
        return None
    if kind == NodeKind.Array:
        return [_value(_child(node, i)) for i in range(rego_node_size(node))]
    if kind == NodeKind.Set:  # written as a sorted array, as OPA does
        return sorted((_value(_child(node, i)) for i in range(rego_node_size(node))), key=_order)
    if kind == NodeKind.Object:
        result: dict[str, Any] = {}
        for i in range(rego_node_size(node)):
            item = _child(node, i)
            key = _value(_child(item, 0))
            result[key if isinstance(key, str) else json.dumps(key, separators=(",", ":"))] = _value(_child(item, 1))
        return result
    raise PolicyEvaluationError(f"unexpected node kind {kind} in a result")


def read_value(output: Any, entrypoint: str) -> Any:
    """The single value of an entry-point query (`output` is a rego-cpp output handle that is ok)."""
    results = rego_output_node(output)
    if rego_node_type(results) == NodeKind.Result:
        result = results
    elif rego_node_type(results) == NodeKind.Results:
        count = rego_node_size(results)
        if count == 0:
            raise UndefinedDecision(entrypoint)
        if count != 1:
            raise PolicyEvaluationError(f"{count} results for one decision")
        result = _child(results, 0)
    else:
        raise PolicyEvaluationError("unexpected result shape")
    for i in range(rego_node_size(result)):
        terms = _child(result, i)
        if rego_node_type(terms) == NodeKind.Terms:
            if rego_node_size(terms) == 0:
                raise UndefinedDecision(entrypoint)
            return _value(_child(terms, 0))
    raise UndefinedDecision(entrypoint)
