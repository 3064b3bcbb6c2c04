"""The SP's browser endpoints under /.iam/saml/, each answered and audited like any request:

    GET       /.iam/saml/metadata   SP metadata (entity id, ACS, SLO, signing certificate)
    GET       /.iam/saml/login      ?rd=/path: AuthnRequest over HTTP-Redirect to the IdP
    POST      /.iam/saml/acs        Assertion Consumer Service (HTTP-POST): verify, then start a session
    GET       /.iam/saml/logout     ?rd=/path: end the session, then SP-initiated Single Logout
    GET|POST  /.iam/saml/slo        the IdP's LogoutResponse (to our request) or LogoutRequest (its own)

The return address (`rd`, and RelayState of IdP-initiated logins) must be a path that one of the
proxy's routes serves; anything else (another host, `//evil`, `/\\evil`, unknown paths) falls back to
`/`. The pending AuthnRequest id and return path travel in a sealed, short-lived cookie; the request
id is also consumed once, so one login answers one request.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from ..audit.auditor import Auditor
from ..authn.saml.config import METADATA_PATH
from ..authn.saml.sp import ServiceProvider
from ..authn.saml.xmlguard import refuse
from ..context import RequestContext
from ..core.asgi import Receive, Scope, Send
from ..core.claims import first
from ..core.errors import AuthUnavailable, BadRequest
from ..session import SessionManager
from .frame import Endpoint, Frame

log = logging.getLogger("iam_proxy.saml")

PREFIX = "/.iam/saml/"
_MAX_FORM_BYTES = 512 * 1024
_LOGIN_PURPOSE = "saml-login"
_LOGOUT_PURPOSE = "saml-logout"


class SAMLPortal:
    def __init__(self, sp: ServiceProvider, sessions: SessionManager, *, is_served_path: Callable[[str, str], bool],
                 auditor: Auditor, secure_cookies: bool, sp_metadata: bytes) -> None:
        self.sp = sp
        self.sessions = sessions
        self._is_served_path = is_served_path
        self._secure = secure_cookies
        self._metadata = sp_metadata
        prefix = "__Host-" if secure_cookies else ""
        self.login_cookie = f"{prefix}iam_saml_login"
        self.logout_cookie = f"{prefix}iam_saml_logout"
        self.frame = Frame(self._endpoints(), auditor)

    # ------------------------------------------------------------------ dispatch

    def _endpoints(self) -> list[Endpoint]:
        get, get_post = frozenset({"GET"}), frozenset({"GET", "POST"})
        return [
            Endpoint(PREFIX + "metadata", frozenset({"GET", "HEAD"}), self._metadata_document, "saml_metadata"),
            Endpoint(PREFIX + "login", get, lambda ctx, receive, send: self._login(ctx, send), "saml_login"),
            Endpoint(PREFIX + "acs", frozenset({"POST"}), self._acs, "saml_acs"),
            Endpoint(PREFIX + "logout", get_post, lambda ctx, receive, send: self._logout(ctx, send), "saml_logout"),
            Endpoint(PREFIX + "slo", get_post, self._slo, "saml_slo"),
        ]

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.frame(scope, receive, send)

    async def _metadata_document(self, ctx: RequestContext, receive: Receive, send: Send) -> int:
        return await _respond(send, 200, [(b"content-type", b"application/samlmetadata+xml")], self._metadata)

    # ------------------------------------------------------------------ login

    def safe_return_path(self, host: str, value: str | None) -> str:
        """`value` if it is a path the proxy serves, else the default landing path."""
        fallback = "/"
        if not value or len(value) > 2048 or not value.startswith("/") or value.startswith(("//", "/\\")):
            return fallback
        if any(ch in value for ch in "\\\r\n\t") or not value.isprintable():
            return fallback
        parts = urlsplit(value)
        if parts.scheme or parts.netloc:
            return fallback
        return value if self._is_served_path(host, parts.path) else fallback

    async def _login(self, ctx: RequestContext, send) -> int:
        return_to = self.safe_return_path(ctx.host, first(ctx.parsed_query.get("rd")))
        # The IdP echoes RelayState, but nothing is read back from it for SP-initiated logins: the
        # return path comes from the sealed cookie.
        location, request_id = await self.sp.authn_request(relay_state="sp")
        ttl = self.sp.settings.login_timeout_seconds
        sealed = self.sessions.seal({"rid": request_id, "rd": return_to, "exp": time.time() + ttl}, _LOGIN_PURPOSE)
        return await _redirect(send, 302, location, [self._state_cookie(self.login_cookie, sealed, ttl)])

    def _state_cookie(self, name: str, value: str, max_age: int) -> str:
        # The IdP posts to the ACS cross-site: a SameSite=Lax cookie would not come along.
        attrs = [f"{name}={value}", "Path=/", f"Max-Age={max(0, max_age)}", "HttpOnly"]
        attrs += ["Secure", "SameSite=None"] if self._secure else ["SameSite=Lax"]
        return "; ".join(attrs)

    def _open_state(self, ctx: RequestContext, name: str, purpose: str) -> dict[str, Any] | None:
        state = self.sessions.open(self.sessions.read_cookie(ctx.headers, name), purpose)
        if state is None or not isinstance(state.get("exp"), (int, float)) or state["exp"] < time.time():
            return None
        return state

    async def _acs(self, ctx: RequestContext, receive, send) -> int:
        form = await _read_form(ctx, receive)
        state = self._open_state(ctx, self.login_cookie, _LOGIN_PURPOSE)
        clear = self._state_cookie(self.login_cookie, "", 0)
        expected = state.get("rid") if state else None
        if not form.get("SAMLResponse"):
            raise BadRequest("saml_message_missing", message="No SAMLResponse in the request.")
        result = await self.sp.consume(form["SAMLResponse"], expected if isinstance(expected, str) else None)
        # One login answers one AuthnRequest, across replicas too (the sessions' store is shared).
        if expected and not await self.sessions.consume_once(
                "saml_request", expected, self.sp.settings.login_timeout_seconds):
            raise refuse("saml_replayed", message="This SAML response was already used.",
                         detail="request id already answered")
        if state is not None:
            return_to = state.get("rd") or "/"
        else:  # IdP-initiated (allowed by configuration): RelayState is only a hint, checked like rd
            return_to = self.safe_return_path(ctx.host, form.get("RelayState"))
        ctx.identity = result.identity
        previous = await self.sessions.load(ctx.headers)
        _, session_cookie = await self.sessions.create(
            identity=result.identity, provider=self.sp.name, protocol="saml", previous=previous,
            idp_session_id=result.session_index,
            data={"name_id": result.name_id, "name_id_format": result.name_id_format,
                  "session_index": result.session_index})
        return await _redirect(send, 303, return_to, [session_cookie, clear])

    # ------------------------------------------------------------------ logout

    async def _logout(self, ctx: RequestContext, send) -> int:
        return_to = self.safe_return_path(ctx.host, first(ctx.parsed_query.get("rd"))
                                          or self.sp.settings.post_logout_path)
        session = await self.sessions.load(ctx.headers)
        cookies = [await self.sessions.destroy(session)]
        if session is None or session.protocol != "saml" or session.provider != self.sp.name:
            return await _redirect(send, 303, return_to, cookies)
        ctx.identity = session.identity
        data = session.data
        try:
            request = await self.sp.logout_request(data.get("name_id") or session.identity.sub,
                                                   data.get("name_id_format"), data.get("session_index"),
                                                   relay_state="sp")
        except AuthUnavailable:
            request = None  # the local session is gone either way; the IdP session may outlive it
        if request is None:
            return await _redirect(send, 303, return_to, cookies)
        location, request_id = request
        ttl = self.sp.settings.login_timeout_seconds
        sealed = self.sessions.seal({"rid": request_id, "rd": return_to, "exp": time.time() + ttl}, _LOGOUT_PURPOSE)
        cookies.append(self._state_cookie(self.logout_cookie, sealed, ttl))
        return await _redirect(send, 302, location, cookies)

    async def _slo(self, ctx: RequestContext, receive, send) -> int:
        if ctx.method == "POST":
            form = await _read_form(ctx, receive)
            raw_query = None
        else:
            form = {k: v[0] for k, v in ctx.parsed_query.items() if v}
            raw_query = ctx.query_string
        if "SAMLResponse" in form:
            state = self._open_state(ctx, self.logout_cookie, _LOGOUT_PURPOSE)
            expected = state.get("rid") if state else None
            await self.sp.verify_logout_response(raw_query, None if raw_query is not None else form,
                                                 expected if isinstance(expected, str) else None)
            return_to = state.get("rd") if state else self.sp.settings.post_logout_path
            return await _redirect(send, 303, return_to or "/", [self._state_cookie(self.logout_cookie, "", 0)])
        if "SAMLRequest" in form:
            request = await self.sp.handle_logout_request(raw_query, None if raw_query is not None else form)
            ended = 0
            for index in request.session_indexes:
                ended += await self.sessions.end_idp_session(self.sp.name, idp_session_id=index)
            if not request.session_indexes:
                ended += await self.sessions.end_idp_session(self.sp.name, sub=request.name_id)
            cookies = []
            session = await self.sessions.load(ctx.headers)
            if session is not None and session.provider == self.sp.name and \
                    session.data.get("name_id") == request.name_id:
                ctx.identity = session.identity
                cookies.append(await self.sessions.destroy(session))
            log.info("saml %s: IdP-initiated logout for %d IdP session(s), %d known here",
                     self.sp.name, max(1, len(request.session_indexes)), ended)
            return await _redirect(send, 302, request.response_url, cookies)
        raise BadRequest("saml_message_missing", message="No SAMLRequest or SAMLResponse in the request.")


async def _read_form(ctx: RequestContext, receive) -> dict[str, str]:
    content_type = ctx.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadRequest("saml_message_malformed", message="Expected an HTML form post.")
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > _MAX_FORM_BYTES:
            raise BadRequest("saml_message_too_large", message="The SAML message is too large.")
        if not message.get("more_body"):
            break
    fields = parse_qs(body.decode("latin-1"), keep_blank_values=True)
    for name, values in fields.items():
        if len(values) > 1:
            raise BadRequest("saml_message_malformed", message=f"Repeated form field {name}.")
    return {name: values[0] for name, values in fields.items()}


async def _respond(send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    headers = [*headers, (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


async def _redirect(send, status: int, location: str, cookies: list[str]) -> int:
    headers = [(b"location", location.encode("latin-1")), (b"cache-control", b"no-store")]
    headers += [(b"set-cookie", c.encode("latin-1")) for c in cookies]
    return await _respond(send, status, headers, b"")


__all__ = ["SAMLPortal", "PREFIX", "METADATA_PATH"]
