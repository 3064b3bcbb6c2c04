"""Forward-auth: a front proxy (nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`)
asks `/.iam/auth` whether a request it holds may pass, and copies our answer onto it.

The answer is a proof of identity for a backend, so it is handed only to the front proxies the
operator names (`forward_auth.trusted_peers`); anyone else gets 404, and only those peers' request
description (`X-Original-*`, `X-Forwarded-*`) is believed. An allowed answer carries every identity
header the proxy owns (empty when the identity has no value, so the front proxy overwrites a
client's copy), the access token on routes that pass it, the policy's upstream headers (the
headers the proxy sets when it forwards itself), and what authenticators and the policy set for
the client (session cookie, Negotiate token). A refusal carries its status, reason code, the policy's
reasons and the error id as headers too (and a browser's sign-in URL), because nginx keeps only
the headers of a subrequest: its error location hands them back to `/.iam/problem`, which renders
the problem response (or the redirect to the proxy's own sign-in page).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from .core.errors import AccessDenied, AuthenticationRequired, BadRequest, ProxyError, RouteNotFound
from .core.header_safety import safe_value
from .core.networks import TrustedNetworks
from .core.responses import send_error

AUTH_PATH = "/.iam/auth"
PROBLEM_PATH = "/.iam/problem"

_REASON = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ERROR_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class NotServed(RouteNotFound):
    """/.iam/auth or /.iam/problem asked by a peer that is not a named front proxy."""

    reason = "forward_auth_not_served"


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _one_of(scope: dict[str, Any], nginx_name: bytes, other_name: bytes) -> str | None:
    """The request description from nginx's header or Traefik's and Caddy's. A front proxy sets one
    and may pass a client's copy of the other along: two that disagree are refused, never chosen."""
    first, second = _header(scope, nginx_name), _header(scope, other_name)
    if first is not None and second is not None and first != second:
        raise BadRequest("forward_auth_description_conflict",
                         message="The forward-auth request describes two different requests.")
    return first if first is not None else second


class ForwardAuth:
    def __init__(self, trusted_peers: list[str], trusted_proxies: list[str], only: bool) -> None:
        self.peers = TrustedNetworks(trusted_peers)
        self.enabled = bool(trusted_peers)
        self.only = only  # the proxy listener answers forward-auth and forwards nothing
        # Addresses a client address may be read through: the front proxies and load balancers.
        self._hops = TrustedNetworks([*trusted_peers, *trusted_proxies])

    def admit(self, scope: dict[str, Any]) -> str:
        """The calling front proxy's address; NotServed for anyone else."""
        peer = (scope.get("client") or ("", 0))[0]
        if not self.enabled or peer not in self.peers:
            raise NotServed(message="Not found.", detail=f"forward-auth request from untrusted peer {peer}")
        return peer

    def describe(self, scope: dict[str, Any]) -> dict[str, Any]:
        """The original request a trusted front proxy describes, as a scope of its own.

        nginx sends X-Original-URI and X-Original-Method (set them in the auth location); Traefik
        and Caddy send X-Forwarded-Method, -Uri, -Host, -Proto. The client is the first untrusted
        hop of X-Forwarded-For, as for the reverse proxy."""
        peer = self.admit(scope)
        uri = _one_of(scope, b"x-original-uri", b"x-forwarded-uri")
        method = _one_of(scope, b"x-original-method", b"x-forwarded-method") or "GET"
        if not uri or not uri.startswith("/"):
            raise BadRequest("forward_auth_uri_missing",
                             message="Forward-auth requests need X-Original-URI or X-Forwarded-Uri.")
        path, _, query = uri.partition("?")  # normalised with every other path (context_from_scope)
        host = _header(scope, b"x-forwarded-host") or _header(scope, b"host") or ""
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"host"] + [(b"host", host.encode("latin-1"))]
        client = self._hops.client_of(peer, _header(scope, b"x-forwarded-for"))
        return {**scope, "method": method.upper(), "path": unquote(path), "raw_path": path.encode("latin-1"),
                "query_string": query.encode("latin-1"), "headers": headers, "client": (client, 0),
                "scheme": _header(scope, b"x-forwarded-proto") or scope.get("scheme", "http"),
                "iam.via": peer}

    @staticmethod
    async def answer_allowed(send, request_headers: list[tuple[str, str]],
                             client_headers: list[tuple[str, str]]) -> int:
        """200: `request_headers` for the front proxy to set upstream (identity headers, some
        empty; the policy's headers), `client_headers` for it to pass to the client."""
        out = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in [*request_headers, *client_headers]]
        out += [(b"content-length", b"0"), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": b""})
        return 200


def refusal_headers(error: ProxyError) -> list[tuple[str, str]]:
    """What a front proxy that keeps only headers (nginx) needs to render a refusal, or the
    sign-in redirect a browser without a session gets."""
    reasons = error.reasons if isinstance(error, AccessDenied) else []
    out = [("x-iam-status", str(error.status)), ("x-iam-reason", error.reason),
           ("x-iam-reasons", json.dumps(reasons, ensure_ascii=True))]
    login_url = getattr(error, "login_url", None) if isinstance(error, AuthenticationRequired) else None
    if login_url:
        out = [("x-iam-status", "302"), *out[1:], ("x-iam-location", login_url)]
    return out


class _Rendered(AccessDenied):
    """A refusal /.iam/auth already decided and audited, rendered again for the client."""


def rendered_refusal(scope: dict[str, Any]) -> tuple[ProxyError, str]:
    """The refusal described by X-Iam-Status, -Reason, -Reasons and -Error-Id (from /.iam/auth's
    answer); values that are not what /.iam/auth sends are replaced, never echoed."""
    try:
        status = int(_header(scope, b"x-iam-status") or "")
    except ValueError:
        status = 0
    reason = _header(scope, b"x-iam-reason") or ""
    try:
        reasons = json.loads(_header(scope, b"x-iam-reasons") or "[]")
    except ValueError:
        reasons = []
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        reasons = []
    error_id = _header(scope, b"x-iam-error-id") or ""
    error = _Rendered(reasons, status=status if 400 <= status <= 599 else 503)
    error.reason = reason if _REASON.match(reason) else "authn_unavailable"
    error.message = "The request was refused."
    return error, error_id if _ERROR_ID.match(error_id) else "-"


def _sign_in_redirect(scope: dict[str, Any]) -> str | None:
    """The proxy's own sign-in page /.iam/auth sent a browser to, when that is what is described."""
    location = _header(scope, b"x-iam-location") or ""
    if _header(scope, b"x-iam-status") == "302" and location.startswith("/.iam/") and safe_value(location):
        return location
    return None


async def send_rendered_refusal(scope: dict[str, Any], send) -> int:
    location = _sign_in_redirect(scope)
    if location is not None:
        await send({"type": "http.response.start", "status": 302, "headers": [
            (b"location", location.encode("latin-1")), (b"content-length", b"0"), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b""})
        return 302
    error, error_id = rendered_refusal(scope)
    return await send_error(send, error, error_id, head_only=scope.get("method") == "HEAD")
