"""Envoy's HTTP ext_authz mode: Envoy sends the request's method, `path_prefix` + path, the headers
its `allowed_headers` name (and the body, with `with_request_body`) to this listener.

An allowed check answers 200 with the headers to set upstream (Envoy copies those its
`allowed_upstream_headers` name), the names to remove in `x-envoy-auth-headers-to-remove`, and the
client's headers (`allowed_client_headers_on_success`); a refused one answers with the refusal's
status, headers and body, which Envoy hands to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.networks import TrustedNetworks
from ..core.responses import send_json
from .check import Check, Decide, Verdict, as_bytes, as_text

log = logging.getLogger("iam_proxy.extauthz")

MAX_BODY = 1024 * 1024  # Envoy's with_request_body.max_request_bytes should stay below this


async def _body(receive) -> bytes | None:
    """The check's body, or None past MAX_BODY."""
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _answer(verdict: Verdict) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    if not verdict.allowed:
        return verdict.status, [(as_bytes(k), as_bytes(v)) for k, v in verdict.client_headers], verdict.body
    headers = [*verdict.upstream_headers, *verdict.client_headers]
    if verdict.remove_headers:
        headers.append(("x-envoy-auth-headers-to-remove", ", ".join(verdict.remove_headers)))
    return 200, [(as_bytes(k), as_bytes(v)) for k, v in headers], b""


class HttpCheckApp:
    """The ASGI app of the `ext_authz.http` listener."""

    def __init__(self, decide: Decide, trusted_peers: list[str], path_prefix: str) -> None:
        self._decide = decide
        self._trusted = TrustedNetworks(trusted_peers)
        self._prefix = path_prefix

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] != "http":
            return
        peer = (scope.get("client") or ("", 0))[0]  # Decide refuses anyone but a trusted Envoy
        path = as_text(scope.get("raw_path") or scope["path"].encode())
        if not path.startswith(self._prefix + "/"):
            log.warning("ext_authz: HTTP check path %r lacks the configured path_prefix", path)
            await send_json(send, 400, {"status": 400, "reason": "ext_authz_path_prefix"})
            return
        body = await _body(receive)
        if body is None:
            await send_json(send, 413, {"status": 413, "reason": "ext_authz_body_too_large"})
            return
        query = scope.get("query_string", b"")
        headers = [(k.decode("utf-8", "surrogateescape").lower(), v.decode("utf-8", "surrogateescape"))
                   for k, v in scope["headers"]]
        first: dict[str, str] = {}
        for name, value in headers:
            first.setdefault(name, value)
        check = Check(method=scope["method"], host=first.get("host", ""),
                      path=path[len(self._prefix):] + (f"?{as_text(query)}" if query else ""), headers=headers,
                      client=self._trusted.client_of(peer, first.get("x-forwarded-for")), via=peer,
                      scheme=first.get("x-forwarded-proto", "http"),
                      protocol=f"HTTP/{scope.get('http_version', '1.1')}", body=body)
        status, out, payload = _answer(await self._decide(check))
        await send({"type": "http.response.start", "status": status,
                    "headers": [*out, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
