"""OIDC browser sign-in: authorization code flow with PKCE (RFC 7636, S256), and the session it leaves.

    browser -> protected route, no session -> 302 /.iam/login?rd=<path>&auth=<authenticator>
            -> (chooser, when the authenticator names several providers) -> 302 IdP authorize
            -> IdP -> /.iam/callback?code&state -> state (cookie-bound, single use), code exchange,
               ID token verified (signature, iss, aud, exp, nonce single use) -> new session, 302 rd

Protocol messages are built with authlib (`prepare_grant_uri`, `prepare_token_request`, PKCE helpers)
and sent with the proxy's pooled aiohttp session under a timeout. ID tokens and logout tokens are
verified by `JWTAuthenticator.verify_claims`, the project's one JOSE path.

Only browsers are redirected (`Accept: text/html`, no `Authorization` header); API clients get 401.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote_plus, urlencode

import aiohttp
import orjson
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from ..context import RequestContext
from ..errors import AuthUnavailable, InvalidCredential
from ..outbound import ResponseTooLarge, read_limited
from ..session import Session, SessionManager
from ..settings import JWTAuthenticatorSettings, JWTProvider, OIDCSessionAuthenticatorSettings, Settings
from .audience import audience_mismatch, token_audiences
from .bearer_jwt import JWTAuthenticator
from .identity import Identity
from .jwks import JWKSCache
from .mapping import identity_from_claims

log = logging.getLogger("iam_proxy.oidc")

LOGIN_PATH = "/.iam/login"
CALLBACK_PATH = "/.iam/callback"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
_MAX_RESPONSE_BYTES = 256 * 1024


def is_browser_request(ctx: RequestContext) -> bool:
    """A person with a browser (who can be sent to a login page), not an API client."""
    if "authorization" in ctx.headers or ctx.method not in ("GET", "HEAD"):
        return False
    accept = ctx.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept.split(",")[0]


class TokenEndpointError(Exception):
    """The IdP refused a grant (4xx): the code or refresh token is no good."""


class RelyingParty:
    """This proxy as the OIDC client of one provider."""

    def __init__(self, provider: JWTProvider, jwks: JWKSCache, http_session: Callable[[], aiohttp.ClientSession],
                 clock=time.time) -> None:
        if provider.client is None:
            raise ValueError(f"provider {provider.id} has no client")
        self.provider = provider
        self.client = provider.client
        self._http = http_session
        self._clock = clock
        self._metadata: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        # ID tokens and logout tokens are addressed to our client id, not to the API audiences.
        id_token_provider = provider.model_copy(update={"audiences": [self.client.client_id]})
        self._verifier = JWTAuthenticator(
            f"oidc-id-token:{provider.id}", JWTAuthenticatorSettings(type="jwt", providers=[provider.id],
                                                                     cache_entries=0),
            {provider.id: id_token_provider}, {provider.id: jwks}, clock=clock)

    @property
    def display_name(self) -> str:
        return self.client.display_name or self.provider.id

    async def metadata(self) -> dict[str, Any]:
        """The discovery document (fetched once; its issuer must be the configured one)."""
        if self._metadata is not None:
            return self._metadata
        async with self._lock:
            if self._metadata is None:
                url = self.provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
                try:
                    meta = await self._get_json(url)
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                    raise AuthUnavailable("idp_unavailable", detail=f"discovery for {self.provider.id}: "
                                          f"{type(exc).__name__}") from None
                if meta.get("issuer") != self.provider.issuer:
                    raise AuthUnavailable("idp_misconfigured", detail=f"discovery issuer {meta.get('issuer')!r}")
                self._metadata = meta
        return self._metadata

    async def endpoint(self, name: str) -> str | None:
        value = (await self.metadata()).get(name)
        return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None

    async def authorization_url(self, redirect_uri: str, scopes: list[str], state: str, nonce: str,
                                code_verifier: str) -> str:
        endpoint = await self.endpoint("authorization_endpoint")
        if endpoint is None:
            raise AuthUnavailable("idp_misconfigured", detail="no authorization_endpoint")
        return prepare_grant_uri(endpoint, self.client.client_id, "code", redirect_uri=redirect_uri,
                                 scope=" ".join(scopes), state=state, nonce=nonce,
                                 code_challenge=create_s256_code_challenge(code_verifier),
                                 code_challenge_method="S256")

    async def exchange_code(self, code: str, redirect_uri: str, code_verifier: str) -> dict[str, Any]:
        body = prepare_token_request("authorization_code", code=code, redirect_uri=redirect_uri,
                                     code_verifier=code_verifier)
        return await self._token_request(body)

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        return await self._token_request(prepare_token_request("refresh_token", refresh_token=refresh_token))

    async def _token_request(self, body: str) -> dict[str, Any]:
        endpoint = await self.endpoint("token_endpoint")
        if endpoint is None:
            raise AuthUnavailable("idp_misconfigured", detail="no token_endpoint")
        auth = None
        if self.client.client_secret is not None:
            auth = aiohttp.BasicAuth(_form_quote(self.client.client_id),
                                     _form_quote(self.client.client_secret.get_secret_value()))
        else:
            body += "&" + urlencode({"client_id": self.client.client_id})
        timeout = aiohttp.ClientTimeout(total=self.provider.http_timeout_seconds)
        try:
            async with self._http().post(endpoint, data=body, auth=auth, timeout=timeout, allow_redirects=False,
                                         headers={"content-type": "application/x-www-form-urlencoded",
                                                  "accept": "application/json"}) as resp:
                raw = await read_limited(resp, _MAX_RESPONSE_BYTES)
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ResponseTooLarge) as exc:
            raise AuthUnavailable("idp_unavailable", detail=f"token endpoint: {type(exc).__name__}") from None
        if 400 <= status < 500:
            error = _json_or_empty(raw).get("error")
            raise TokenEndpointError(f"token endpoint answered {status} {error!r}")
        if status != 200:
            raise AuthUnavailable("idp_unavailable", detail=f"token endpoint answered {status}")
        tokens = _json_or_empty(raw)
        if not isinstance(tokens.get("access_token"), str):
            raise AuthUnavailable("idp_misconfigured", detail="token response without access_token")
        return tokens

    async def verify_id_token(self, id_token: str, *, nonce: str | None) -> tuple[dict[str, Any], Identity]:
        """The verified claims and the identity they map to; `nonce` is required at login."""
        claims, _, _ = await self._verifier.verify_claims(id_token)
        if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise InvalidCredential("nonce_mismatch", message="The sign-in response does not match this sign-in.")
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.client.client_id:
            raise audience_mismatch(token_audiences(aud), [self.client.client_id],
                                    message="The ID token was issued to another client.")
        identity = identity_from_claims(claims, self.provider.claims, method="oidc", provider=self.provider.id)
        if not identity.sub:
            raise InvalidCredential("subject_missing", message="The ID token has no subject.")
        return claims, identity

    async def verify_logout_token(self, token: str) -> dict[str, Any]:
        """OIDC Back-Channel Logout 1.0, section 2.6: a signed JWT with the logout event, no nonce."""
        claims, _, _ = await self._verifier.verify_claims(token)
        events = claims.get("events")
        if not isinstance(events, dict) or BACKCHANNEL_EVENT not in events:
            raise InvalidCredential("logout_token_invalid", message="Not a logout token.")
        if "nonce" in claims or not isinstance(claims.get("iat"), int):
            raise InvalidCredential("logout_token_invalid", message="Not a logout token.")
        if not isinstance(claims.get("sid"), str) and not isinstance(claims.get("sub"), str):
            raise InvalidCredential("logout_token_invalid", message="The logout token names no session.")
        return claims

    async def end_session_url(self, id_token_hint: str | None, post_logout_redirect_uri: str) -> str | None:
        """RP-initiated logout at the IdP (OIDC RP-Initiated Logout 1.0), when the IdP supports it."""
        try:
            endpoint = await self.endpoint("end_session_endpoint")
        except AuthUnavailable:
            return None
        if endpoint is None:
            return None
        params = {"post_logout_redirect_uri": post_logout_redirect_uri, "client_id": self.client.client_id}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"

    async def _get_json(self, url: str) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self.provider.http_timeout_seconds)
        async with self._http().get(url, timeout=timeout, allow_redirects=False) as resp:
            if resp.status != 200:
                raise ValueError(f"GET {url} answered {resp.status}")
            document = orjson.loads(await read_limited(resp, _MAX_RESPONSE_BYTES))
        if not isinstance(document, dict):
            raise ValueError(f"GET {url}: not a JSON object")
        return document


def _form_quote(value: str) -> str:
    # RFC 6749 2.3.1: client id and secret are form-urlencoded before Basic encoding.
    return quote_plus(value)


def _json_or_empty(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def tokens_expire_at(tokens: dict[str, Any], now: float) -> float | None:
    expires_in = tokens.get("expires_in")
    return now + float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else None


def session_tokens(tokens: dict[str, Any], previous: dict[str, str] | None = None) -> dict[str, str]:
    """What a session keeps: the ID token (logout hint) and the refresh token; never the access token."""
    kept = dict(previous or {})
    for name in ("id_token", "refresh_token"):
        if isinstance(tokens.get(name), str):
            kept[name] = tokens[name]
    return kept


@dataclass
class BrowserLogin:
    """What the oidc_session authenticators and the /.iam/ portal share."""

    settings: Settings
    sessions: SessionManager
    relying_parties: dict[str, RelyingParty]  # by provider id
    authenticators: dict[str, OIDCSessionAuthenticatorSettings]  # by authenticator name

    def providers_for(self, authenticator: str | None) -> list[str]:
        if authenticator in self.authenticators:
            return list(self.authenticators[authenticator].providers)  # type: ignore[index]
        seen: dict[str, None] = {}
        for cfg in self.authenticators.values():
            seen.update(dict.fromkeys(cfg.providers))
        return list(seen)

    def settings_for_provider(self, provider: str) -> OIDCSessionAuthenticatorSettings | None:
        return next((cfg for cfg in self.authenticators.values() if provider in cfg.providers), None)



def build_browser_login(settings: Settings, sessions: SessionManager | None, jwks: dict[str, JWKSCache],
                        http_session: Callable[[], aiohttp.ClientSession]) -> BrowserLogin | None:
    """None when no oidc_session authenticator is configured. `sessions` is the proxy's one manager
    (shared with SAML logins), present whenever sessions.secret is set (settings check it)."""
    configured = {name: cfg for name, cfg in settings.authenticators.items()
                  if isinstance(cfg, OIDCSessionAuthenticatorSettings)}
    if not configured:
        return None
    providers = {p.id: p for p in settings.identity_providers}
    wanted = {pid for cfg in configured.values() for pid in cfg.providers}
    rps = {pid: RelyingParty(providers[pid], jwks[pid], http_session) for pid in sorted(wanted)}
    if sessions is None:
        raise ValueError("sessions.secret is required for oidc_session")
    return BrowserLogin(settings, sessions, rps, configured)


class OIDCSessionAuthenticator:
    """The session cookie of an OIDC sign-in, refreshed at the IdP as it ages."""

    challenge = None  # a browser session has no WWW-Authenticate scheme; browsers are redirected

    def __init__(self, name: str, settings: OIDCSessionAuthenticatorSettings, login: BrowserLogin,
                 clock=time.time) -> None:
        self.name = name
        self.settings = settings
        self._login = login
        self._clock = clock
        self._refreshing: dict[str, asyncio.Lock] = {}

    def login_url(self, ctx: RequestContext) -> str | None:
        """Where a browser without a session is sent; None for API clients (they get 401)."""
        if not is_browser_request(ctx):
            return None
        return f"{LOGIN_PATH}?{urlencode({'rd': ctx.path_with_query, 'auth': self.name})}"

    async def authenticate(self, ctx: RequestContext) -> Identity | None:
        session = await self._login.sessions.load_for(ctx)
        if session is None or session.protocol != "oidc" or session.provider not in self.settings.providers:
            return None
        if self._refresh_due(session):
            session = await self._refresh(ctx, session)
            if session is None:
                return None
        ctx.access_token = session.tokens.get("access_token")  # for routes with pass_access_token
        return session.identity

    def _refresh_due(self, session: Session) -> bool:
        now = self._clock()
        if now - session.refreshed_at >= self.settings.refresh_after_seconds:
            return True
        return (session.token_expires_at is not None
                and now >= session.token_expires_at - self.settings.refresh_before_expiry_seconds)

    async def _refresh(self, ctx: RequestContext, session: Session) -> Session | None:
        """Re-read the identity with the refresh token; the session ends when the IdP refuses."""
        lock = self._refreshing.setdefault(session.id, asyncio.Lock())
        try:
            async with lock:
                current = await self._login.sessions.load(ctx.headers)
                if current is None:
                    return None
                if not self._refresh_due(current):
                    return current  # another request refreshed it meanwhile
                return await self._refresh_now(ctx, current)
        finally:
            if not lock.locked():
                self._refreshing.pop(session.id, None)

    async def _refresh_now(self, ctx: RequestContext, session: Session) -> Session | None:
        rp = self._login.relying_parties[session.provider]
        refresh_token = session.tokens.get("refresh_token")
        try:
            if refresh_token is None:
                raise TokenEndpointError("no refresh token")
            tokens = await rp.refresh(refresh_token)
            identity = session.identity
            if isinstance(tokens.get("id_token"), str):
                claims, identity = await rp.verify_id_token(tokens["id_token"], nonce=None)
                if claims.get("sub") != session.identity.sub and identity.sub != session.identity.sub:
                    raise InvalidCredential("subject_changed", message="The session's subject changed.")
        except (TokenEndpointError, InvalidCredential) as exc:
            log.info("session refresh refused for sub=%s provider=%s: %s", session.identity.sub,
                     session.provider, exc)
            ctx.response_headers["set-cookie"] = await self._login.sessions.destroy(session)
            return None
        now = self._clock()
        updated = session.with_changes(identity=identity, refreshed_at=now,
                                       tokens=session_tokens(tokens, session.tokens),
                                       token_expires_at=tokens_expire_at(tokens, now))
        cookie = await self._login.sessions.save(updated)
        if cookie is not None:
            ctx.response_headers["set-cookie"] = cookie
        log.info("session refreshed for sub=%s provider=%s groups=%s", identity.sub, session.provider,
                 list(identity.groups))
        return updated
