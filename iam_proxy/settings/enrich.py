"""Enrichers: LDAP groups and Keycloak roles added to an identity, chosen by `type`."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, SecretStr, field_validator

from .base import Model


class LdapEnricherSettings(Model):
    """Adds directory groups to an identity another authenticator produced (a JWT, a certificate)."""

    type: Literal["ldap"]
    directory: str
    # The identity field that finds the directory entry; cert_subject is the client certificate's DN.
    key: Literal["sub", "username", "email", "cert_subject"] = "username"
    # filter: search with `filter` (`{value}` = the key, escaped); dn: the key is the entry's DN.
    lookup: Literal["filter", "dn"] = "filter"
    filter: str | None = None  # default: the directory's user_filter with the key as {username}
    methods: list[str] = []  # identity methods to enrich (jwt, x509, ...); empty = all but anonymous
    # true: an identity with no directory entry is refused (401 user_not_in_directory).
    require_entry: bool = False
    cache_ttl_seconds: float = Field(default=60, ge=0, le=3600)
    cache_entries: int = Field(default=10_000, ge=0)

    @field_validator("filter")
    @classmethod
    def _has_value(cls, value: str | None) -> str | None:
        if value is not None and ("{value}" not in value or not value.startswith("(")):
            raise ValueError("must be a parenthesized LDAP filter containing {value}")
        return value


class KeycloakEnricherSettings(Model):
    """Adds what Keycloak knows but the token may not carry: full group paths and effective
    (composite) roles, read with python-keycloak as a service-account client."""

    type: Literal["keycloak"]
    server_url: str  # e.g. https://sso.example.org (without /realms/...)
    realm: str
    client_id: str  # a confidential client whose service account has realm-management view-users
    client_secret: SecretStr
    providers: list[str] = []  # enrich identities from these identity providers only; empty = any
    group_paths: bool = True  # add groups as full paths (/org/finance) next to the token's names
    realm_roles: bool = True  # add effective realm roles, composites expanded
    client_roles: list[str] = []  # client ids whose effective roles are added as "<client>:<role>"
    cache_ttl_seconds: float = Field(default=60, ge=0, le=3600)
    cache_entries: int = Field(default=10_000, ge=0)
    timeout_seconds: float = Field(default=5, gt=0, le=60)


EnricherSettings = Annotated[Union[LdapEnricherSettings, KeycloakEnricherSettings], Field(discriminator="type")]
