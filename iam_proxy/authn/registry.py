"""Builds each configured authenticator from its validated settings: one entry per credential kind.

Adding a kind: write `authn/<kind>.py` with a settings model (added to `AuthenticatorSettings` in
settings/authn.py) and a class with `name`, `challenge` and `async authenticate(ctx)`, then add its builder
to BUILDERS below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import aiohttp

from ..core import shared_cache
from ..ops.metrics import Metrics
from ..settings import Settings
from ..settings.authn import (
    AnonymousAuthenticatorSettings, ApiKeyAuthenticatorSettings, IntrospectionAuthenticatorSettings,
    JWTAuthenticatorSettings, KerberosAuthenticatorSettings, OIDCSessionAuthenticatorSettings,
)
from ..settings.directory import LdapAuthenticatorSettings
from ..settings.saml import SAMLAuthenticatorSettings
from ..settings.x509 import X509AuthenticatorSettings
from .anonymous import AnonymousAuthenticator
from .apikey import ApiKeyAuthenticator
from .base import Authenticator
from .bearer_jwt import TOKENS_TABLE, JWTAuthenticator
from .introspection import IntrospectionAuthenticator
from .jwks import JWKSCache
from .oidc_session import BrowserLogin, OIDCSessionAuthenticator
from .x509 import X509Authenticator

if TYPE_CHECKING:
    from ..directory import LdapDirectoryClient


@dataclass
class Deps:
    """What authenticators may share: settings, JWKS caches, an outbound HTTP session, metrics."""

    settings: Settings
    jwks: dict[str, JWKSCache]
    http_session: Callable[[], aiohttp.ClientSession]
    metrics: Metrics
    directories: dict[str, LdapDirectoryClient] = field(default_factory=dict)  # by directory id
    saml: Authenticator | None = None  # the SAML SP's session authenticator, built with its endpoints
    browser_login: BrowserLogin | None = None  # sessions and relying parties, when configured


def _jwt(name: str, cfg: JWTAuthenticatorSettings, deps: Deps) -> Authenticator:
    providers = {p.id: p for p in deps.settings.identity_providers}
    return JWTAuthenticator(name, cfg, providers, deps.jwks, shared=shared_cache.table(TOKENS_TABLE))


def _anonymous(name: str, cfg: AnonymousAuthenticatorSettings, deps: Deps) -> Authenticator:
    return AnonymousAuthenticator(name, cfg)


def _x509(name: str, cfg: X509AuthenticatorSettings, deps: Deps) -> Authenticator:
    return X509Authenticator(name, cfg, deps.settings.listeners.trusted_proxies)


def _kerberos(name: str, cfg: KerberosAuthenticatorSettings, deps: Deps) -> Authenticator:
    from .kerberos import KerberosAuthenticator  # the optional 'kerberos' extra (python-gssapi)

    return KerberosAuthenticator(name, cfg)


def _ldap(name: str, cfg: LdapAuthenticatorSettings, deps: Deps) -> Authenticator:
    from .ldap_basic import LdapBasicAuthenticator  # ldap3 is loaded only where a directory is configured

    return LdapBasicAuthenticator(name, cfg, deps.directories[cfg.directory])


def _apikey(name: str, cfg: ApiKeyAuthenticatorSettings, deps: Deps) -> Authenticator:
    return ApiKeyAuthenticator(name, cfg)


def _saml(name: str, cfg: SAMLAuthenticatorSettings, deps: Deps) -> Authenticator:
    assert deps.saml is not None  # settings: a saml authenticator needs sessions, so the SP is built
    return deps.saml


def _oidc_session(name: str, cfg: OIDCSessionAuthenticatorSettings, deps: Deps) -> Authenticator:
    assert deps.browser_login is not None  # settings: oidc_session needs sessions and a provider client
    return OIDCSessionAuthenticator(name, cfg, deps.browser_login)


def _introspection(name: str, cfg: IntrospectionAuthenticatorSettings, deps: Deps) -> Authenticator:
    provider = next(p for p in deps.settings.identity_providers if p.id == cfg.provider)
    return IntrospectionAuthenticator(name, cfg, provider, deps.http_session)


BUILDERS: dict[type, Callable[[str, Any, Deps], Authenticator]] = {
    JWTAuthenticatorSettings: _jwt,
    AnonymousAuthenticatorSettings: _anonymous,
    X509AuthenticatorSettings: _x509,
    KerberosAuthenticatorSettings: _kerberos,
    LdapAuthenticatorSettings: _ldap,
    ApiKeyAuthenticatorSettings: _apikey,
    SAMLAuthenticatorSettings: _saml,
    OIDCSessionAuthenticatorSettings: _oidc_session,
    IntrospectionAuthenticatorSettings: _introspection,
}


def build_authenticators(deps: Deps) -> dict[str, Authenticator]:
    return {name: BUILDERS[type(cfg)](name, cfg, deps) for name, cfg in deps.settings.authenticators.items()}
