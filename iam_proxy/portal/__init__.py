"""The proxy's user-facing pages under /.iam/ for browser sign-in (OIDC) and its sessions.

    GET  /.iam/login              start sign-in (one provider) or show the chooser (several)
    GET  /.iam/callback           OIDC redirect target: state, code exchange, ID token, new session
    GET  /.iam/ , /.iam/me        the signed-in page (identity, groups, roles, session expiry)
    GET  /.iam/userinfo           the same as JSON, for scripts in the page
    GET  /.iam/logout             confirmation page;  POST: end the session + RP-initiated logout
    GET  /.iam/signed-out         where the IdP sends the browser back after logout
    POST /.iam/backchannel-logout OIDC Back-Channel Logout: the IdP ends sessions server to server

Every request here is audited like a proxied one. Errors are pages with an error id for browsers and
problem+json for everyone else; details go only to the log.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from authlib.common.security import generate_token

from ..audit.auditor import Auditor
from ..authn.oidc_session import (
    CALLBACK_PATH,
    BrowserLogin,
    session_tokens,
    tokens_expire_at,
)
from ..context import RequestContext
from ..core.asgi import Receive, Scope, Send
from ..core.claims import first
from ..core.errors import AuthenticationRequired, BadRequest, InvalidCredential, ProxyError
from ..core.responses import send_error
from ..routes.matcher import RouteTable
from . import pages
from .frame import Endpoint, Frame, Handler

log = logging.getLogger("iam_proxy.portal")

_MAX_FORM_BYTES = 64 * 1024
_SECURITY_HEADERS = [("cache-control", "no-store"), ("x-content-type-options", "nosniff"),
                     ("referrer-policy", "no-referrer"), ("x-frame-options", "DENY")]


def _wants_html(ctx: RequestContext) -> bool:
    return "text/html" in ctx.headers.get("accept", "")


class Portal:
    def __init__(self, login: BrowserLogin, routes: RouteTable, auditor: Auditor, clock=time.time) -> None:
        self.login = login
        self.sessions = login.sessions
        self._routes = routes
        self._clock = clock
        prefix = "__Host-" if login.settings.sessions.secure else ""
        self.login_cookie = f"{prefix}iam_oidc_login"
        self.frame = Frame(self._endpoints(), auditor, self._error)

    # ------------------------------------------------------------------ dispatch

    def _endpoints(self) -> list[Endpoint]:
        def page(document: Callable[[], tuple[str, str]]) -> Handler:
            return lambda ctx, receive, send: self._html(send, 200, document())

        get, get_head, post = frozenset({"GET"}), frozenset({"GET", "HEAD"}), frozenset({"POST"})
        return [
            Endpoint("/.iam/", get_head, lambda ctx, receive, send: self._signed_in_page(ctx, send), "portal_"),
            Endpoint("/.iam/me", get_head, lambda ctx, receive, send: self._signed_in_page(ctx, send), "portal_me"),
            Endpoint("/.iam/login", get, lambda ctx, receive, send: self._login(ctx, send), "portal_login"),
            Endpoint(CALLBACK_PATH, get, lambda ctx, receive, send: self._callback(ctx, send), "portal_callback"),
            Endpoint("/.iam/logout", get, page(pages.logout_confirm), "portal_logout"),
            Endpoint("/.iam/logout", post, self._logout, "portal_logout"),
            Endpoint("/.iam/signed-out", get, page(pages.signed_out), "portal_signed_out"),
            Endpoint("/.iam/backchannel-logout", post, self._backchannel_logout, "portal_backchannel_logout"),
            Endpoint("/.iam/userinfo", get, lambda ctx, receive, send: self._userinfo(ctx, send), "portal_userinfo"),
        ]

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.frame(scope, receive, send)

    # ------------------------------------------------------------------ sign-in

    def safe_redirect(self, value: str | None) -> str:
        """`value` when it is a path this proxy serves (a route, or the portal's own page), else `/`."""
        if not value or len(value) > 2048 or not value.startswith("/") or value.startswith(("//", "/\\")):
            return "/"
        if any(ch in value for ch in "\\\r\n\t") or not value.isprintable():
            return "/"
        parts = urlsplit(value)
        if parts.scheme or parts.netloc:
            return "/"
        if parts.path in ("/.iam/", "/.iam/me"):
            return value
        if parts.path.startswith("/.iam/"):
            return "/"
        return value if any(r.path_regex.match(parts.path) for r in self._routes.routes) else "/"

    def _callback_url(self, ctx: RequestContext) -> str:
        return f"{ctx.scheme}://{ctx.host}{CALLBACK_PATH}"

    async def _login(self, ctx: RequestContext, send) -> int:
        query = ctx.parsed_query
        rd = self.safe_redirect(first(query.get("rd")))
        auth = first(query.get("auth"))
        auth = auth if auth in self.login.authenticators else None
        providers = self.login.providers_for(auth)
        pid = first(query.get("provider"))
        if pid is None and len(providers) == 1:
            pid = providers[0]
        if pid is None:
            choices = [(p, self.login.relying_parties[p].display_name) for p in providers]
            return await self._html(send, 200, pages.chooser(choices, rd, auth))
        if pid not in providers:
            raise BadRequest("provider_unknown", message="Unknown identity provider.")
        rp = self.login.relying_parties[pid]
        settings = self.login.authenticators[auth] if auth else self.login.settings_for_provider(pid)
        if settings is None:
            raise BadRequest("provider_unknown", message="Unknown identity provider.")
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        location = await rp.authorization_url(self._callback_url(ctx), settings.scopes, state, nonce, verifier)
        pending = {"state": state, "nonce": nonce, "verifier": verifier, "rd": rd, "provider": pid,
                   "exp": self._clock() + settings.login_timeout_seconds}
        cookie = self.sessions.set_cookie(self.login_cookie, self.sessions.seal(pending, self.login_cookie),
                                          settings.login_timeout_seconds)
        return await self._redirect(send, location, [("set-cookie", cookie)])

    async def _callback(self, ctx: RequestContext, send) -> int:
        pending = self.sessions.open(self.sessions.read_cookie(ctx.headers, self.login_cookie), self.login_cookie)
        signed_in = await self.login.complete(pending, ctx.parsed_query, self._callback_url(ctx), self._clock())
        tokens, claims = signed_in.tokens, signed_in.claims
        previous = await self.sessions.load(ctx.headers)
        _, session_cookie = await self.sessions.create(
            identity=signed_in.identity, provider=signed_in.provider, protocol="oidc", previous=previous,
            idp_session_id=claims.get("sid") if isinstance(claims.get("sid"), str) else None,
            tokens=session_tokens(tokens), token_expires_at=tokens_expire_at(tokens, self._clock()))
        ctx.identity = signed_in.identity
        assert pending is not None  # complete() refused a callback without a pending sign-in
        target = self.safe_redirect(pending.get("rd"))
        return await self._redirect(send, target, [("set-cookie", session_cookie),
                                                   ("set-cookie", self.sessions.clear_cookie(self.login_cookie))])

    # ------------------------------------------------------------------ pages

    async def _signed_in_page(self, ctx: RequestContext, send) -> int:
        session = await self.sessions.load(ctx.headers)
        if session is None:
            return await self._redirect(send, "/.iam/login?" + urlencode({"rd": "/.iam/"}))
        ctx.identity = session.identity
        return await self._html(send, 200, pages.signed_in(session.identity, session))

    async def _userinfo(self, ctx: RequestContext, send) -> int:
        session = await self.sessions.load(ctx.headers)
        if session is None:
            raise AuthenticationRequired()
        ctx.identity = session.identity
        identity = session.identity.to_dict()
        identity.pop("cert", None)
        body = {"identity": identity,
                "session": {"provider": session.provider, "protocol": session.protocol,
                            "created_at": int(session.created_at), "expires_at": int(session.expires_at),
                            "refreshed_at": int(session.refreshed_at)}}
        return await self._send(send, 200, [("content-type", "application/json")], orjson.dumps(body))

    # ------------------------------------------------------------------ logout

    async def _logout(self, ctx: RequestContext, receive, send) -> int:
        form = await _read_form(receive)
        session = await self.sessions.load(ctx.headers)
        if session is not None and session.protocol == "saml":
            return await self._redirect(send, "/.iam/saml/logout", status=303)  # SAML does its own SLO
        clear = await self.sessions.destroy(session)
        signed_out = f"{ctx.scheme}://{ctx.host}/.iam/signed-out"
        location = "/.iam/signed-out"
        if session is not None:
            ctx.identity = session.identity
            rp = self.login.relying_parties.get(session.provider)
            settings = self.login.settings_for_provider(session.provider)
            allowed = list(settings.post_logout_redirect_uris) if settings else []
            wanted = form.get("post_logout_redirect_uri")
            back = wanted if wanted in allowed else (allowed[0] if allowed else signed_out)
            if rp is not None:
                location = await rp.end_session_url(session.tokens.get("id_token"), back) or location
        return await self._redirect(send, location, [("set-cookie", clear)], status=303)

    async def _backchannel_logout(self, ctx: RequestContext, receive, send) -> int:
        form = await _read_form(receive)
        token = form.get("logout_token")
        headers = [("content-type", "application/json"), ("cache-control", "no-store")]
        if not token:
            raise BadRequest("logout_token_missing", message="logout_token is required.")
        rp = next((r for r in self.login.relying_parties.values()
                   if r.provider.issuer == _unverified_issuer(token)), None)
        if rp is None:
            raise InvalidCredential("issuer_unknown", message="The logout token's issuer is not accepted here.",
                                    status=400)
        try:
            claims = await rp.verify_logout_token(token)
        except InvalidCredential as exc:
            exc.status = 400  # Back-Channel Logout 1.0 section 2.8: a bad logout token is a 400
            raise
        jti = claims.get("jti")
        if not isinstance(jti, str) or not await self.sessions.consume_once("logout-jti", jti, 3600):
            raise InvalidCredential("logout_token_replayed", message="The logout token was already used.", status=400)
        sid = claims.get("sid") if isinstance(claims.get("sid"), str) else None
        sub = claims.get("sub") if isinstance(claims.get("sub"), str) else None
        ended = await self.sessions.end_idp_session(rp.provider.id, idp_session_id=sid, sub=None if sid else sub)
        log.info("back-channel logout from %s ended %d session(s) (sid=%s)", rp.provider.id, ended, bool(sid))
        return await self._send(send, 200, headers, b"{}")

    # ------------------------------------------------------------------ responses

    async def _error(self, ctx: RequestContext | None, send, exc: ProxyError) -> int:
        error_id = ctx.decision_id if ctx else "-"
        if ctx is not None and _wants_html(ctx):
            document = pages.error(exc.status, exc.reason, exc.message, error_id)
            return await self._html(send, exc.status, document, [("x-iam-error-id", error_id)])
        return await send_error(send, exc, error_id)

    async def _html(self, send, status: int, document: tuple[str, str],
                    extra: list[tuple[str, str]] = ()) -> int:
        html, csp = document
        headers = [("content-type", "text/html; charset=utf-8"), ("content-security-policy", csp),
                   *_SECURITY_HEADERS, *extra]
        return await self._send(send, status, headers, html.encode())

    async def _redirect(self, send, location: str, extra: list[tuple[str, str]] = (), status: int = 302) -> int:
        return await self._send(send, status, [("location", location), ("cache-control", "no-store"), *extra], b"")

    @staticmethod
    async def _send(send, status: int, headers: list[tuple[str, str]], body: bytes) -> int:
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
        return status


async def _read_form(receive) -> dict[str, str]:
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > _MAX_FORM_BYTES:
            raise BadRequest("body_too_large", message="The form is too large.")
    return dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))


def _unverified_issuer(token: str) -> str | None:
    """Only to choose which provider verifies the token; nothing else is read before verification."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return claims.get("iss") if isinstance(claims, dict) and isinstance(claims.get("iss"), str) else None
