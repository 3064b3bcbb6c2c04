"""Credential masking for anything that leaves the process (audit events, decision logs, logs)."""

from __future__ import annotations

from typing import Any

MASK = "***"

SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token",
    "x-amz-security-token", "x-iam-assertion",
})
SECRET_QUERY = frozenset({
    "access_token", "id_token", "refresh_token", "token", "code", "client_secret", "password",
    "samlresponse", "samlrequest", "api_key", "apikey",
})
# Credential headers named in this deployment's config (an API key header such as X-Partner-Key),
# registered by the authenticators that read them.
_configured_secret_headers: set[str] = set()


def register_secret_header(name: str) -> None:
    _configured_secret_headers.add(name.lower())


def mask_authorization(value: str) -> str:
    """Keep the scheme so an auditor can tell Bearer from Basic from Negotiate."""
    scheme, sep, _ = value.partition(" ")
    return f"{scheme} {MASK}" if sep else MASK


def mask_headers(headers: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        if name in ("authorization", "proxy-authorization"):
            out[name] = mask_authorization(value)
        elif name in SECRET_HEADERS or name in _configured_secret_headers:
            out[name] = MASK
        else:
            out[name] = value
    return out


def mask_query_string(query: str) -> str:
    if not query:
        return query
    parts = []
    for pair in query.split("&"):
        name, sep, _ = pair.partition("=")
        parts.append(f"{name}={MASK}" if sep and name.lower() in SECRET_QUERY else pair)
    return "&".join(parts)


def mask_input(policy_input: dict[str, Any]) -> dict[str, Any]:
    """A copy of the policy input with credentials masked; the original is left untouched."""
    http = policy_input["attributes"]["request"]["http"]
    path, sep, query = http["path"].partition("?")
    masked_http = {**http, "headers": mask_headers(http["headers"]),
                   "path": path + sep + mask_query_string(query), "query": mask_query_string(http["query"])}
    parsed_query = {k: ([MASK] * len(v) if k.lower() in SECRET_QUERY else v)
                    for k, v in policy_input.get("parsed_query", {}).items()}
    attributes = {**policy_input["attributes"], "request": {**policy_input["attributes"]["request"],
                                                            "http": masked_http}}
    return {**policy_input, "attributes": attributes, "parsed_query": parsed_query}
