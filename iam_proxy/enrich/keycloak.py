"""Keycloak enricher: group paths and effective roles from the Keycloak admin API (python-keycloak).

Tokens often carry group names only and leave composite roles unexpanded (or are trimmed to stay
small). This enricher asks Keycloak, as a service-account client, for the user's groups (full paths)
and effective realm and client roles, and adds them to the identity. Results are cached per user for
`cache_ttl_seconds`; python-keycloak is blocking, so calls run in a worker thread under a timeout.

Keycloak down or refusing our client: AuthUnavailable (503), never a pass with fewer facts. A user
Keycloak no longer knows: InvalidCredential (401 `user_unknown`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import replace

from ..authn.identity import Identity
from ..context import RequestContext
from ..errors import AuthUnavailable, InvalidCredential
from ..settings import KeycloakEnricherSettings

log = logging.getLogger("iam_proxy.enrich.keycloak")


class KeycloakEnricher:
    def __init__(self, name: str, settings: KeycloakEnricherSettings, clock=time.time) -> None:
        self.name = name
        self.settings = settings
        self._clock = clock
        self._admin = None
        self._client_uuids: dict[str, str] = {}
        self._cache: OrderedDict[str, tuple[tuple[str, ...], tuple[str, ...], float]] = OrderedDict()

    def forget(self, subs: set[str]) -> int:
        """Drop what was looked up for these users (their roles or groups changed at the IdP)."""
        gone = [sub for sub in self._cache if sub in subs]
        for sub in gone:
            del self._cache[sub]
        return len(gone)

    def _connect(self):
        from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

        if self._admin is None:
            connection = KeycloakOpenIDConnection(
                server_url=self.settings.server_url.rstrip("/") + "/", realm_name=self.settings.realm,
                user_realm_name=self.settings.realm, client_id=self.settings.client_id,
                client_secret_key=self.settings.client_secret.get_secret_value(),
                timeout=self.settings.timeout_seconds, verify=True)
            self._admin = KeycloakAdmin(connection=connection)
        return self._admin

    def _lookup(self, user_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Blocking: (group paths, roles) of one user."""
        from keycloak.exceptions import KeycloakGetError

        admin = self._connect()
        try:
            groups = admin.get_user_groups(user_id) if self.settings.group_paths else []
            roles: list[str] = []
            if self.settings.realm_roles:
                roles += [r["name"] for r in admin.get_composite_realm_roles_of_user(user_id)]
            for client_id in self.settings.client_roles:
                if client_id not in self._client_uuids:
                    self._client_uuids[client_id] = admin.get_client_id(client_id)
                roles += [f"{client_id}:{r['name']}"
                          for r in admin.get_composite_client_roles_of_user(user_id, self._client_uuids[client_id])]
        except KeycloakGetError as exc:
            if exc.response_code == 404:
                raise LookupError(user_id) from None
            raise
        return tuple(g["path"] for g in groups if isinstance(g.get("path"), str)), tuple(roles)

    async def enrich(self, identity: Identity, ctx: RequestContext) -> Identity:
        if identity.anonymous or (self.settings.providers and identity.provider not in self.settings.providers):
            return identity
        now = self._clock()
        cached = self._cache.get(identity.sub)
        if cached is not None and cached[2] > now:
            paths, roles = cached[0], cached[1]
        else:
            try:
                paths, roles = await asyncio.wait_for(asyncio.to_thread(self._lookup, identity.sub),
                                                      timeout=self.settings.timeout_seconds * 3)
            except LookupError:
                raise InvalidCredential("user_unknown", message="The user is not known to the identity provider.",
                                        detail=f"keycloak has no user {identity.sub}") from None
            except Exception as exc:  # noqa: BLE001 - any failure of the source fails closed
                self._admin = None  # reconnect next time (token expiry, Keycloak restart)
                raise AuthUnavailable("enricher_unavailable", detail=f"keycloak {self.name}: {type(exc).__name__}") \
                    from None
            if self.settings.cache_entries > 0 and self.settings.cache_ttl_seconds > 0:
                self._cache[identity.sub] = (paths, roles, now + self.settings.cache_ttl_seconds)
                if len(self._cache) > self.settings.cache_entries:
                    self._cache.popitem(last=False)
        groups = tuple(dict.fromkeys((*identity.groups, *paths)))
        merged_roles = tuple(dict.fromkeys((*identity.roles, *roles)))
        return replace(identity, groups=groups, roles=merged_roles)
