"""Builds each configured enricher from its validated settings: one entry per enricher kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import aiohttp

from ..ops.metrics import Metrics
from ..settings import Settings
from ..settings.enrich import KeycloakEnricherSettings, LdapEnricherSettings
from .base import Enricher

if TYPE_CHECKING:
    from ..directory import LdapDirectoryClient


@dataclass
class Deps:
    """What enrichers may share: settings, LDAP directories (by id), an outbound HTTP session, metrics."""

    settings: Settings
    directories: dict[str, LdapDirectoryClient] = field(default_factory=dict)
    http_session: Callable[[], aiohttp.ClientSession] | None = None
    metrics: Metrics | None = None


def _ldap(name: str, cfg: LdapEnricherSettings, deps: Deps) -> Enricher:
    from .ldap_groups import LdapGroupEnricher

    return LdapGroupEnricher(name, cfg, deps.directories[cfg.directory])


def _keycloak(name: str, cfg: KeycloakEnricherSettings, deps: Deps) -> Enricher:
    from .keycloak import KeycloakEnricher

    return KeycloakEnricher(name, cfg)


BUILDERS: dict[type, Callable[[str, Any, Deps], Enricher]] = {
    LdapEnricherSettings: _ldap,
    KeycloakEnricherSettings: _keycloak,
}


def build_enrichers(deps: Deps) -> dict[str, Enricher]:
    return {name: BUILDERS[type(cfg)](name, cfg, deps) for name, cfg in deps.settings.enrichers.items()}
