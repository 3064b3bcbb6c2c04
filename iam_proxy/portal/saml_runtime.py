"""Builds the SAML SP, its authenticator and its endpoints from validated settings (one SP per proxy)."""

from __future__ import annotations

from typing import Any, Callable

from ..audit.auditor import Auditor
from ..authn.saml.authenticator import SAMLSessionAuthenticator
from ..authn.saml.metadata import sp_metadata
from ..authn.saml.replay import MemoryReplayCache, RedisReplayCache, ReplayCache
from ..authn.saml.sp import ServiceProvider
from ..core.errors import ConfigError, RouteAmbiguous, RouteNotFound
from ..routes.matcher import RouteTable
from ..session import SessionManager
from ..settings import Settings
from ..settings.saml import SAMLAuthenticatorSettings
from .saml import SAMLPortal


def saml_settings(settings: Settings) -> tuple[str, SAMLAuthenticatorSettings] | None:
    for name, auth in settings.authenticators.items():
        if isinstance(auth, SAMLAuthenticatorSettings):
            return name, auth
    return None


def build_replay_cache(settings: Settings, saml: SAMLAuthenticatorSettings) -> ReplayCache:
    if saml.replay_cache.store == "redis":
        redis = settings.sessions.redis
        assert redis is not None  # settings validation: store 'redis' needs sessions.redis
        return RedisReplayCache(redis.url, redis.key_prefix, redis.timeout_seconds,
                                redis.password.get_secret_value() if redis.password else None)
    return MemoryReplayCache(saml.replay_cache.max_entries)


class SAMLRuntime:
    """What app.py holds: the SP (metadata refresh, readiness), the authenticator and the portal."""

    def __init__(self, settings: Settings, sessions: SessionManager, routes: RouteTable,
                 session_factory: Callable[[], Any], auditor: Auditor) -> None:
        found = saml_settings(settings)
        assert found is not None
        name, saml = found
        for key in ("key_file", "cert_file"):
            if not getattr(saml, key).is_file():
                raise ConfigError(f"authenticators.{name}.{key}: {getattr(saml, key)} does not exist")
        self.sp = ServiceProvider(name, saml, build_replay_cache(settings, saml), session_factory)
        self.authenticator = SAMLSessionAuthenticator(name, sessions)

        def is_served_path(host: str, path: str) -> bool:
            if path == saml.post_logout_path:
                return True
            try:
                routes.match("GET", host, path)
            except (RouteNotFound, RouteAmbiguous):
                return False
            return True

        self.portal = SAMLPortal(self.sp, sessions, is_served_path=is_served_path, auditor=auditor,
                                 secure_cookies=settings.sessions.secure, sp_metadata=sp_metadata(saml))

    async def start(self) -> None:
        await self.sp.refresh_metadata()

    def background(self):
        return [self.sp.run_refresh()]

    async def close(self) -> None:
        await self.sp.replay.close()
