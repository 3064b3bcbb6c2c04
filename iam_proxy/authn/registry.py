"""Builds each configured authenticator from its validated settings: one entry per credential kind.

Adding a kind: write `authn/<kind>.py` with a settings model (added to `AuthenticatorSettings` in
settings.py) and a class with `name`, `challenge` and `async authenticate(ctx)`, then add its builder
to BUILDERS below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..settings import AnonymousAuthenticatorSettings, JWTAuthenticatorSettings, Settings
from .anonymous import AnonymousAuthenticator
from .base import Authenticator
from .bearer_jwt import JWTAuthenticator


@dataclass
class Deps:
    """What authenticators may share: settings, JWKS caches, an outbound HTTP session, metrics."""

    settings: Settings
    jwks: dict[str, Any]
    http_session: Callable[[], Any]
    metrics: Any


def _jwt(name: str, cfg: JWTAuthenticatorSettings, deps: Deps) -> Authenticator:
    providers = {p.id: p for p in deps.settings.identity_providers}
    return JWTAuthenticator(name, cfg, providers, deps.jwks)


def _anonymous(name: str, cfg: AnonymousAuthenticatorSettings, deps: Deps) -> Authenticator:
    return AnonymousAuthenticator(name, cfg)


BUILDERS: dict[type, Callable[[str, Any, Deps], Authenticator]] = {
    JWTAuthenticatorSettings: _jwt,
    AnonymousAuthenticatorSettings: _anonymous,
}


def build_authenticators(deps: Deps) -> dict[str, Authenticator]:
    return {name: BUILDERS[type(cfg)](name, cfg, deps) for name, cfg in deps.settings.authenticators.items()}
