"""Strict decision parsing, as opa-envoy-plugin's `IsAllowed`: a boolean, or an object whose
`allowed` is a boolean. Anything else (undefined, null, a string, a wrong type in any known field)
is a malformed decision, and a malformed decision denies.
"""

from __future__ import annotations

from typing import Any

from ..core.decision import Decision


class MalformedDecision(ValueError):
    pass


def _header_map(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise MalformedDecision(f"{key} must be an object")
    out: dict[str, str] = {}
    for name, v in value.items():
        if isinstance(v, str):
            out[name] = v
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            out[name] = ", ".join(v)
        else:
            raise MalformedDecision(f"{key}.{name} must be a string or a list of strings")
        if "\r" in out[name] or "\n" in out[name] or "\r" in name or "\n" in name:
            raise MalformedDecision(f"{key}.{name} contains a line break")
    return out


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise MalformedDecision(f"{key} must be a list of strings")
    return tuple(value)


def parse_decision(value: Any) -> Decision:
    if isinstance(value, bool):
        return Decision(allowed=value, raw=value)
    if not isinstance(value, dict):
        raise MalformedDecision(f"decision must be a boolean or an object, not {type(value).__name__}")
    allowed = value.get("allowed")
    if not isinstance(allowed, bool):
        raise MalformedDecision("decision.allowed must be a boolean")
    status = value.get("http_status")
    if status is not None and (not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599):
        raise MalformedDecision("http_status must be an integer between 200 and 599")
    body = value.get("body")
    if body is not None and not isinstance(body, str):
        raise MalformedDecision("body must be a string")
    return Decision(
        allowed=allowed,
        reasons=_strings(value["reasons"], "reasons") if "reasons" in value else (),
        headers=_header_map(value["headers"], "headers") if "headers" in value else {},
        request_headers_to_remove=_strings(value["request_headers_to_remove"], "request_headers_to_remove")
        if "request_headers_to_remove" in value else (),
        response_headers_to_add=_header_map(value["response_headers_to_add"], "response_headers_to_add")
        if "response_headers_to_add" in value else {},
        http_status=status,
        body=body,
        raw=value,
    )
