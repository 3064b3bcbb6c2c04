"""The `ldap` enricher: adds a directory entry's groups to an identity another authenticator produced.

It finds the entry from one identity field (`key`): a JWT's `sub` or `username`, an email, or a client
certificate's subject DN (`lookup: dn`, when certificates are issued with the directory DN as subject).
Groups are added to those the identity already has; `email` and `name` are filled only when missing;
`attributes.ldap` holds the entry's DN and mapped attributes. The directory being down fails the
request (503); an identity with no entry passes unchanged unless `require_entry` is set.
"""

from __future__ import annotations

import dataclasses
import logging

from ..context import RequestContext
from ..core.cache import ExpiringCache
from ..core.errors import AuthUnavailable, InvalidCredential
from ..core.identity import Identity
from ..directory.ldap import DirectoryUnavailable, DirectoryUser, LdapDirectoryClient, LookupFailed
from ..settings.enrich import LdapEnricherSettings

log = logging.getLogger("iam_proxy.enrich.ldap")

_MISSING = DirectoryUser(dn="", username="")  # cached "no entry", distinct from "not cached"


class LdapGroupEnricher:
    def __init__(self, name: str, settings: LdapEnricherSettings, directory: LdapDirectoryClient) -> None:
        self.name = name
        self.settings = settings
        self.directory = directory
        self._methods = frozenset(settings.methods)
        self._cache: ExpiringCache[str, DirectoryUser] = ExpiringCache(settings.cache_entries)

    def _key(self, identity: Identity) -> str | None:
        if self.settings.key == "cert_subject":
            return (identity.cert or {}).get("subject") or None
        value = getattr(identity, self.settings.key)
        return value or None

    async def enrich(self, identity: Identity, ctx: RequestContext) -> Identity:
        if identity.anonymous or (self._methods and identity.method not in self._methods):
            return identity
        value = self._key(identity)
        user = await self._lookup(value) if value else None
        if user is None:
            if self.settings.require_entry:
                raise InvalidCredential("user_not_in_directory", message="The user is not known to the directory.",
                                        detail=f"enricher {self.name}: no entry for {self.settings.key}={value!r}")
            return identity
        groups = tuple(dict.fromkeys([*identity.groups, *user.groups]))
        attributes = {**identity.attributes, "ldap": {"directory": self.directory.id, **user.attributes}}
        return dataclasses.replace(identity, groups=groups, email=identity.email or user.email,
                                   name=identity.name or user.name, attributes=attributes)

    async def _lookup(self, value: str) -> DirectoryUser | None:
        cached = self._cache.get(value)
        if cached is not None:
            return None if cached is _MISSING else cached
        try:
            user = await self.directory.find_user(value, filter_template=self.settings.filter,
                                                  by_dn=self.settings.lookup == "dn")
        except LookupFailed as exc:
            # Several entries, or a DN outside the user base: the identity cannot be tied to one entry.
            raise InvalidCredential("user_not_in_directory", message="The user is not known to the directory.",
                                    detail=f"enricher {self.name}: {exc.detail}") from None
        except DirectoryUnavailable as exc:
            log.warning("ldap enricher %s: %s", self.name, exc)
            raise AuthUnavailable("ldap_unavailable", message="The directory is temporarily unavailable.",
                                  detail=str(exc)) from None
        self._cache.put(value, user or _MISSING, self.settings.cache_ttl_seconds)
        return user
