"""The policy input document: a superset of opa-envoy-plugin's, plus `identity` and `route`.

A policy written for opa-envoy-plugin (reading `input.attributes.request.http.*`, `input.parsed_path`,
`input.parsed_query`) works unchanged; see docs/policies.md, "The input document".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .. import __version__
from ..context import RequestContext
from ..core.redaction import mask_authorization
from ..core.timestamps import rfc3339_utc

INPUT_VERSION = {"ext_authz": "v3", "encoding": "iam-proxy", "iam_proxy": __version__}


def build_input(ctx: RequestContext) -> dict[str, Any]:
    route = ctx.route
    identity = ctx.identity
    size = ctx.headers.get("content-length")
    headers = ctx.headers
    if ctx.consumed_headers:
        # A password or API key the proxy itself checked is never handed to the policy (or to OPA).
        headers = {k: mask_authorization(v) if k in ctx.consumed_headers else v for k, v in headers.items()}
    source: dict[str, Any] = {"address": {"socketAddress": {"address": ctx.peer}}}
    if ctx.client_cert_chain:
        source["certificate"] = quote(ctx.client_cert_chain[0], safe="")  # URL-encoded PEM, as Envoy
    return {
        "attributes": {
            "source": source,
            "destination": {"address": {"socketAddress": {"address": ctx.host}}},
            "request": {
                "time": rfc3339_utc(ctx.received_at),
                "http": {
                    "id": ctx.request_id,
                    "method": ctx.method,
                    "headers": headers,
                    "path": ctx.path_with_query,
                    "host": ctx.host,
                    "scheme": ctx.scheme,
                    "query": ctx.query_string,
                    "fragment": "",
                    "size": int(size) if size and size.isdigit() else 0,
                    "protocol": f"HTTP/{ctx.http_version}",
                },
            },
        },
        "parsed_path": ctx.parsed_path,
        "parsed_query": ctx.parsed_query,
        "version": INPUT_VERSION,
        "identity": identity.to_dict() if identity is not None else None,
        "route": {
            "id": route.id,
            "upstream": route.settings.upstream,
            "labels": dict(route.settings.labels),
        } if route is not None else None,
    }
