"""SessionManager: the one place that mints, seals, reads, refreshes and ends browser sessions."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, Mapping

import orjson

from ..authn.identity import Identity
from ..context import RequestContext
from ..errors import ProxyError
from ..settings import SessionSettings
from ._model import Session
from ._seal import Sealer
from .revocations import FileRevocations, RedisRevocations, Revocations
from .stores import CookieStore, RedisStore, SessionStore

log = logging.getLogger("iam_proxy.session")

# Browsers drop cookies over 4096 bytes (name, value and attributes); refuse rather than loop.
_MAX_COOKIE_BYTES = 4000


def parse_cookies(header: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in out:
            out[name] = value.strip().strip('"')
    return out


class SessionManager:
    def __init__(self, settings: SessionSettings, store: SessionStore, revocations: Revocations,
                 clock=time.time) -> None:
        if settings.secret is None:
            raise ValueError("sessions.secret is required")
        self.settings = settings
        self.cookie_name = settings.cookie_name
        self.store = store
        self.revocations = revocations
        self._clock = clock
        self._sealer = Sealer(settings.secret.get_secret_value(),
                              [s.get_secret_value() for s in settings.previous_secrets])

    # ------------------------------------------------------------------ cookies

    def set_cookie(self, name: str, value: str, max_age: int) -> str:
        """`Set-Cookie` value with the attributes every proxy cookie carries."""
        attrs = [f"{name}={value}", "Path=/", f"Max-Age={max(0, max_age)}", "HttpOnly", "SameSite=Lax"]
        if self.settings.secure:
            attrs.append("Secure")
        return "; ".join(attrs)

    def clear_cookie(self, name: str | None = None) -> str:
        return self.set_cookie(name or self.cookie_name, "", 0)

    def read_cookie(self, headers: Mapping[str, str], name: str | None = None) -> str | None:
        return parse_cookies(headers.get("cookie")).get(name or self.cookie_name) or None

    def seal(self, value: dict[str, Any], purpose: str) -> str:
        return self._sealer.seal(orjson.dumps(value), purpose)

    def open(self, value: str | None, purpose: str) -> dict[str, Any] | None:
        if not value:
            return None
        plain = self._sealer.open(value, purpose)
        if plain is None:
            return None
        data = orjson.loads(plain)
        return data if isinstance(data, dict) else None

    # ------------------------------------------------------------------ sessions

    async def create(self, *, identity: Identity, provider: str, protocol: str, previous: Session | None = None,
                     idp_session_id: str | None = None, tokens: dict[str, str] | None = None,
                     token_expires_at: float | None = None, data: dict[str, Any] | None = None
                     ) -> tuple[Session, str]:
        """A new session with a fresh id (the previous one, if any, is ended) and its Set-Cookie."""
        if previous is not None:
            await self._end(previous)
        now = self._clock()
        session = Session(id=secrets.token_urlsafe(32), identity=identity, provider=provider, protocol=protocol,
                          created_at=now, expires_at=now + self.settings.lifetime_seconds, refreshed_at=now,
                          idp_session_id=idp_session_id, tokens=dict(tokens or {}),
                          token_expires_at=token_expires_at, data=dict(data or {}))
        cookie = await self._cookie_for(session)
        await self.revocations.issued(session)
        log.info("session created for sub=%s provider=%s protocol=%s", identity.sub, provider, protocol)
        return session, cookie

    async def load(self, headers: Mapping[str, str]) -> Session | None:
        """The request's live session, or None (no cookie, not ours, ended, expired)."""
        return (await self.lookup(headers))[0]

    async def load_for(self, ctx: RequestContext) -> Session | None:
        """`load` for an authenticator: a cookie that no longer counts is cleared, and the 401 says
        why (ctx.missing_reason) rather than "no credential"."""
        session, missing = await self.lookup(ctx.headers)
        if missing is not None:
            ctx.missing_reason = missing
            ctx.response_headers.setdefault("set-cookie", self.clear_cookie())
        return session

    async def lookup(self, headers: Mapping[str, str]) -> tuple[Session | None, str | None]:
        """The live session, or None and why a cookie of ours did not give one: `session_revoked`
        (logged out, ended by the IdP), `session_expired`; None when there was no such cookie."""
        value = self.read_cookie(headers)
        payload = self._sealer.open(value, self.cookie_name) if value else None
        if payload is None:
            return None, None
        session = await self.store.resolve(payload)
        session_id = session.id if session is not None else self.store.session_id(payload)
        if session_id is not None and await self.revocations.is_ended(session_id, session):
            return None, "session_revoked"
        if session is None or session.expires_at <= self._clock():
            return None, "session_expired"
        return session, None

    async def save(self, session: Session) -> str | None:
        """Store a changed session; returns the Set-Cookie to send when the cookie itself changed."""
        cookie = await self._cookie_for(session)
        return cookie if self.settings.store == "cookie" else None

    async def destroy(self, session: Session | None) -> str:
        """End the session (if any); returns the Set-Cookie that clears the browser's cookie."""
        if session is not None:
            await self._end(session)
            log.info("session ended for sub=%s provider=%s", session.identity.sub, session.provider)
        return self.clear_cookie()

    async def end_idp_session(self, provider: str, *, idp_session_id: str | None = None,
                              sub: str | None = None) -> int:
        """End every session of an IdP session (or every earlier one of a subject): they are refused
        from now on by every replica, restart or not. Returns how many live sessions that ended."""
        if not idp_session_id and not sub:
            raise ValueError("idp_session_id or sub is required")
        until = self._clock() + self.settings.lifetime_seconds
        ended = await self.revocations.end_idp_session(provider, idp_session_id, sub, until)
        stored = await self.store.end_idp_session(provider, idp_session_id, sub)
        return max(ended, stored)

    async def _end(self, session: Session) -> None:
        await self.revocations.end(session.id, session.expires_at)
        await self.store.end(session)

    async def consume_once(self, kind: str, value: str, ttl: float) -> bool:
        return await self.store.consume_once(f"{kind}:{value}", ttl)

    async def close(self) -> None:
        await self.store.close()
        await self.revocations.close()

    async def _cookie_for(self, session: Session) -> str:
        payload = await self.store.save(session)
        value = self._sealer.seal(payload, self.cookie_name)
        cookie = self.set_cookie(self.cookie_name, value, int(session.expires_at - self._clock()))
        if len(cookie) > _MAX_COOKIE_BYTES:
            raise ProxyError("session_too_large", message="The session is too large for a cookie.",
                             detail=f"{len(cookie)} bytes; use sessions.store 'redis'")
        return cookie


def build_session_manager(settings: SessionSettings, clock=time.time) -> SessionManager:
    store: SessionStore
    if settings.store == "redis":
        if settings.redis is None:
            raise ValueError("sessions.redis is required for store 'redis'")
        store = RedisStore(settings.redis, clock)
    else:
        store = CookieStore(clock)
    # Ended sessions are shared through Redis when there is one, else through a file on this host.
    revocations: Revocations = (RedisRevocations(settings.redis, clock) if settings.redis is not None
                                else FileRevocations(settings.revocation_file, clock))
    return SessionManager(settings, store, revocations, clock)
