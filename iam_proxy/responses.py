"""Error responses as RFC 9457 problem details: a reason code and an error id, never internals."""

from __future__ import annotations

from typing import Any

import orjson

from .errors import AccessDenied, AuthenticationRequired, InvalidCredential, ProxyError
from .header_safety import as_wire, safe_value, settable

PROBLEM_TYPE = "https://iam-proxy.dev/problems/"


def problem_body(error: ProxyError, error_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + error.reason,
        "title": error.message,
        "status": error.status,
        "reason": error.reason,
        "error_id": error_id,
    }
    if isinstance(error, AccessDenied) and error.reasons:
        body["reasons"] = error.reasons
    body.update(error.facts)
    return body


def error_headers(error: ProxyError) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(error, AuthenticationRequired):
        for challenge in getattr(error, "challenges", ()):
            headers.append((b"www-authenticate", challenge.encode()))
    elif isinstance(error, InvalidCredential):
        challenge = getattr(error, "challenge", None)
        if challenge:
            scheme = challenge.split(" ", 1)[0]
            value = challenge
            if scheme.lower() == "bearer":
                value = f'{challenge}, error="invalid_token", error_description="{error.reason}"'
            headers.append((b"www-authenticate", value.encode()))
    elif isinstance(error, AccessDenied):
        # a policy's deny headers never frame the response or forge hop-by-hop ones
        headers += [(k.lower().encode("latin-1"), as_wire(v).encode("latin-1")) for k, v in error.headers.items()
                    if settable(k) and safe_value(v)]
    # a refusal that tells the client when to come back (Retry-After, RateLimit: ratelimit/)
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in getattr(error, "client_headers", ())]
    return headers


async def send_error(send, error: ProxyError, error_id: str, head_only: bool = False,
                     authn_headers: dict[str, str] | None = None,
                     extra_headers: list[tuple[str, str]] = ()) -> int:
    """`authn_headers`: what authenticators set for the client (a refreshed or cleared session cookie);
    `extra_headers`: more for the client (a forward-auth refusal's description)."""
    authn = [(k.lower().encode("latin-1"), v.encode("latin-1"))
             for k, v in [*(authn_headers or {}).items(), *extra_headers]]
    login_url = getattr(error, "login_url", None)
    if isinstance(error, AuthenticationRequired) and login_url:
        await send({"type": "http.response.start", "status": 302,
                    "headers": [(b"location", login_url.encode("latin-1")), (b"content-length", b"0"),
                                (b"cache-control", b"no-store"), (b"x-iam-error-id", error_id.encode()), *authn]})
        await send({"type": "http.response.body", "body": b""})
        return 302
    if isinstance(error, AccessDenied) and error.body is not None:
        payload = error.body.encode()
        content_type = b"text/plain; charset=utf-8"
    else:
        payload = orjson.dumps(problem_body(error, error_id))
        content_type = b"application/problem+json"
    headers = [(b"content-type", content_type), (b"content-length", str(len(payload)).encode()),
               (b"cache-control", b"no-store"), (b"x-iam-error-id", error_id.encode())]
    extra = error_headers(error)
    names = {n for n, _ in extra}
    headers = [h for h in headers if h[0] not in names or h[0] == b"www-authenticate"] + extra + authn
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head_only else payload})
    return error.status


async def send_json(send, status: int, payload: Any, extra_headers: list[tuple[bytes, bytes]] = ()) -> int:
    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *extra_headers]})
    await send({"type": "http.response.body", "body": body})
    return status
