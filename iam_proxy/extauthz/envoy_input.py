"""What opa-envoy-plugin's input has and the proxy's own input lacks, added for a check.

The proxy's input (policy/input.py) already has opa-envoy-plugin's shape; a check adds what only
Envoy knows (contextExtensions, metadataContext, tlsSession, the source's principal, the request
body) and, as opa-envoy-plugin does, `parsed_body` and `truncated_body`. The proxy's own values win
where both have one: its headers have the credentials it checked itself masked.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import BadRequest
from .check import Check


def _fill(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    for key, value in theirs.items():
        if key not in ours:
            ours[key] = value
        elif isinstance(ours[key], dict) and isinstance(value, dict) and key != "headers":
            _fill(ours[key], value)


def parsed_body(check: Check) -> tuple[Any, bool]:
    """(parsed_body, truncated_body) by opa-envoy-plugin's rule: a JSON body is parsed unless
    Envoy sent less of it than Content-Length says; any other body is not parsed."""
    if "application/json" not in (check.header("content-type") or "") or not check.body:
        return None, False
    length = check.header("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest("content_length_invalid", message="The Content-Length header is not a number.")
        if int(length) > len(check.body):
            return None, True
    try:
        return orjson.loads(check.body), False
    except orjson.JSONDecodeError:
        raise BadRequest("body_not_json", message="The request body is not the JSON its type says.") from None


def add_envoy_fields(policy_input: dict[str, Any], check: Check) -> None:
    _fill(policy_input["attributes"], check.attributes)
    http = policy_input["attributes"]["request"]["http"]
    if check.body and "body" not in http:
        http["body"] = check.body.decode("utf-8", errors="replace")
    policy_input["parsed_body"], policy_input["truncated_body"] = parsed_body(check)
