"""The whole configuration: every section, and the checks that span sections."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from ..core.extras import require_opa_library
from .audit import AuditSettings
from .authn import (AuthenticatorSettings, IntrospectionAuthenticatorSettings, JWTAuthenticatorSettings,
                    OIDCSessionAuthenticatorSettings)
from .base import Model, unique
from .directory import LdapAuthenticatorSettings, LdapDirectory
from .enrich import EnricherSettings, LdapEnricherSettings
from .forward import IdentityHeaders
from .identity import JWTProvider
from .listeners import ExtAuthzSettings, ForwardAuthSettings, Listeners, WebSocketSettings
from .policy import PolicySettings
from .ratelimit import RateLimitSettings
from .routes import Route
from .saml import SAMLAuthenticatorSettings
from .sessions import SessionSettings
from .signals import SignalsSettings


class Settings(Model):
    listeners: Listeners = Listeners()  # the proxy and admin listeners, workers, trusted front proxies
    identity_providers: list[JWTProvider] = []  # OIDC/OAuth issuers: keys, audiences, claim mapping, client
    authenticators: dict[str, AuthenticatorSettings]  # named; routes list the ones they accept, in order
    directories: list[LdapDirectory] = []  # LDAP / Active Directory servers for the ldap plugins
    enrichers: dict[str, EnricherSettings] = {}  # named; add groups or roles after authentication
    routes: list[Route] = Field(min_length=1)  # exactly one must match each request
    policy: PolicySettings = PolicySettings()  # the Rego policies and the engine that evaluates them
    identity_headers: IdentityHeaders = IdentityHeaders()  # what the upstream receives about the caller
    forward_auth: ForwardAuthSettings = ForwardAuthSettings()  # /.iam/auth for nginx, Traefik, Envoy
    ext_authz: ExtAuthzSettings = ExtAuthzSettings()  # Envoy external authorization (envoy.md)
    websockets: WebSocketSettings = WebSocketSettings()  # proxied websockets: how often an open one is re-decided
    audit: AuditSettings = AuditSettings()  # one event per request: sinks, spool, hash chain
    sessions: SessionSettings = SessionSettings()  # browser sessions (oidc_session, saml)
    rate_limits: RateLimitSettings = RateLimitSettings()  # requests per client and route (rate-limiting.md)
    signals: SignalsSettings | None = None  # OpenID Shared Signals receiver (signals.md)
    # Secrets are wrapped so that printing the settings never shows them.
    secrets: dict[str, SecretStr] = {}

    @model_validator(mode="after")
    def _references(self) -> "Settings":
        provider_ids = [p.id for p in self.identity_providers]
        unique(provider_ids, "identity_providers", "id")
        unique([r.id for r in self.routes], "routes", "id")
        for name, auth in self.authenticators.items():
            if isinstance(auth, JWTAuthenticatorSettings):
                for i, pid in enumerate(auth.providers):
                    if pid not in provider_ids:
                        raise ValueError(
                            f"authenticators.{name}.providers[{i}]: unknown identity provider {pid!r}"
                        )
        directory_ids = [d.id for d in self.directories]
        unique(directory_ids, "directories", "id")
        for section, plugins in (("authenticators", self.authenticators), ("enrichers", self.enrichers)):
            for name, plugin in plugins.items():
                if isinstance(plugin, (LdapAuthenticatorSettings, LdapEnricherSettings)) \
                        and plugin.directory not in directory_ids:
                    raise ValueError(f"{section}.{name}.directory: unknown directory {plugin.directory!r}")
        _check_interactive_logins(self)
        if self.signals is not None and self.listeners.workers > 1 and self.signals.state_file is None:
            raise ValueError("signals.state_file: listeners.workers > 1 needs a file the workers share revocations in")
        _check_saml(self)
        _check_rate_limit_routes(self)
        if self.listeners.workers > 1:
            for mode in ("grpc", "http"):
                listener = getattr(self.ext_authz, mode)
                if listener is not None and listener.port == 0:
                    raise ValueError(f"ext_authz.{mode}.port: listeners.workers > 1 needs a fixed port (not 0)")
        for i, route in enumerate(self.routes):
            for j, auth_name in enumerate(route.authenticators):
                if auth_name not in self.authenticators:
                    raise ValueError(
                        f"routes[{i}].authenticators[{j}]: unknown authenticator {auth_name!r}"
                    )
            for j, enricher_name in enumerate(route.enrichers):
                if enricher_name not in self.enrichers:
                    raise ValueError(f"routes[{i}].enrichers[{j}]: unknown enricher {enricher_name!r}")
            engine = self.engine_for(route)
            if engine == "opa-lib":
                try:
                    require_opa_library()
                except ValueError as exc:
                    key = f"routes[{i}].policy.engine" if route.policy.engine else "policy.engine"
                    raise ValueError(f"{key}: {exc}") from None
            if engine == "opa" and self.policy.opa is None:
                raise ValueError(f"routes[{i}].policy.engine: engine 'opa' needs policy.opa.url")
            if engine == "opa" and route.policy.cache is True:
                raise ValueError(f"routes[{i}].policy.cache: the decision cache needs a policy revision "
                                 "the proxy controls; it is not available with engine 'opa'")
        return self

    def engine_for(self, route: Route) -> str:
        return route.policy.engine or self.policy.default_engine

    def caches_decisions(self, route: Route) -> bool:
        if route.policy.cache is not None:
            return route.policy.cache
        return self.engine_for(route) in ("embedded", "opa-wasm", "opa-lib")


def _check_saml(settings: "Settings") -> None:
    """SAML logins live in the browser session; a shared replay cache needs the sessions' Redis."""
    names = [n for n, a in settings.authenticators.items() if isinstance(a, SAMLAuthenticatorSettings)]
    if len(names) > 1:
        raise ValueError(f"authenticators.{names[1]}: one saml authenticator per proxy (its ACS is /.iam/saml/acs)")
    for name, auth in settings.authenticators.items():
        if isinstance(auth, SAMLAuthenticatorSettings):
            if settings.sessions.secret is None:
                raise ValueError(f"sessions.secret: authenticator {name!r} (saml) needs a session secret")
            if auth.replay_cache.store == "redis" and settings.sessions.redis is None:
                raise ValueError(f"authenticators.{name}.replay_cache.store: 'redis' needs sessions.redis.url")


def _check_rate_limit_routes(settings: "Settings") -> None:
    route_ids = {r.id for r in settings.routes}
    for where, limit in settings.rate_limits.all_limits():
        for j, route_id in enumerate(limit.routes):
            if route_id not in route_ids:
                raise ValueError(f"rate_limits.{where}.routes[{j}]: unknown route {route_id!r}")


def _check_interactive_logins(settings: "Settings") -> None:
    """oidc_session and introspection name providers that exist and have a client; sessions have a key."""
    providers = {p.id: p for p in settings.identity_providers}
    index = {pid: i for i, pid in enumerate(providers)}
    for name, auth in settings.authenticators.items():
        if isinstance(auth, OIDCSessionAuthenticatorSettings):
            for i, pid in enumerate(auth.providers):
                if pid not in providers:
                    raise ValueError(f"authenticators.{name}.providers[{i}]: unknown identity provider {pid!r}")
                if providers[pid].client is None:
                    raise ValueError(f"identity_providers[{index[pid]}].client: provider {pid!r} is used "
                                     "for browser sign-in and needs a client")
            if settings.sessions.secret is None:
                raise ValueError(f"sessions.secret: authenticator {name!r} (oidc_session) needs a session secret")
        if isinstance(auth, IntrospectionAuthenticatorSettings):
            provider = providers.get(auth.provider)
            if provider is None:
                raise ValueError(f"authenticators.{name}.provider: unknown identity provider {auth.provider!r}")
            if provider.client is None or provider.client.client_secret is None:
                raise ValueError(f"identity_providers[{index[auth.provider]}].client: introspection needs "
                                 "a confidential client (client_id and client_secret)")

