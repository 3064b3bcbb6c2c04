"""LDAP / Active Directory: the directories, and the authenticator that checks passwords against one."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from .base import Model


class LdapGroupSettings(Model):
    """Where a user's groups come from, and how they are named in Identity.groups."""

    # member_of: the user entry's memberOf (OpenLDAP memberof or dynlist overlay, Active Directory);
    # member: groups under base_dn listing the user's DN (groupOfNames/member,
    #   groupOfUniqueNames/uniqueMember, AD group/member); member_uid: posixGroup/memberUid = login name.
    sources: list[Literal["member_of", "member", "member_uid"]] = Field(default=["member_of"], min_length=1)
    base_dn: str | None = None
    # none: direct groups only; walk: also the groups those groups belong to, searched level by level
    # (any server, bounded by max_depth); ad_in_chain: Active Directory resolves the whole chain in one
    # search (LDAP_MATCHING_RULE_IN_CHAIN, 1.2.840.113556.1.4.1941).
    nested: Literal["none", "walk", "ad_in_chain"] = "none"
    max_depth: int = Field(default=8, ge=1, le=32)
    name: Literal["cn", "dn"] = "cn"  # cn: the value of the group DN's first RDN
    max_groups: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _base_dn(self) -> "LdapGroupSettings":
        searches = set(self.sources) - {"member_of"} or self.nested != "none"
        if searches and not self.base_dn:
            raise ValueError("base_dn is required for the member and member_uid sources and nested groups")
        return self


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LdapDirectory(Model):
    """One LDAP directory (OpenLDAP, Active Directory, ...), shared by the ldap authenticator and enricher."""

    id: str
    # Tried in order (failover): ldaps://host:636, or ldap://host:389 upgraded with StartTLS.
    urls: list[str] = Field(min_length=1)
    start_tls: bool = True  # for ldap:// URLs
    ca_file: Path | None = None  # the directory's CA bundle; None = the system trust store
    tls_server_name: str | None = None  # the name the server certificate must carry, if not the URL's host
    # Only for tests against a directory on this machine: ldap:// without StartTLS (passwords in clear).
    allow_cleartext_on_loopback: bool = False
    # The service account that searches for users and groups; none = anonymous search.
    bind_dn: str | None = None
    bind_password: SecretStr | None = None
    user_base_dn: str
    # `{username}` is replaced by the login name, escaped as RFC 4515 requires.
    user_filter: str = "(&(objectClass=inetOrgPerson)(uid={username}))"
    user_scope: Literal["subtree", "one"] = "subtree"
    username_attribute: str = "uid"
    email_attribute: str | None = "mail"
    name_attribute: str | None = "cn"
    attributes: dict[str, str] = {}  # Identity.attributes name -> LDAP attribute
    groups: LdapGroupSettings = LdapGroupSettings()
    connect_timeout_seconds: float = Field(default=3, gt=0, le=60)
    timeout_seconds: int = Field(default=5, ge=1, le=120)  # per LDAP operation (ldap3 takes whole seconds)
    deadline_seconds: float = Field(default=10, gt=0, le=300)  # one whole login or lookup, queueing included
    pool_size: int = Field(default=8, ge=1, le=128)  # pooled connections, and concurrent operations
    server_retry_seconds: float = Field(default=30, ge=0)  # a failed server is skipped this long

    @field_validator("urls")
    @classmethod
    def _ldap_urls(cls, value: list[str]) -> list[str]:
        for i, url in enumerate(value):
            if not re.match(r"^ldaps?://[^/\s]+/?$", url):
                raise ValueError(f"[{i}]: must look like ldaps://host[:port] or ldap://host[:port]")
        return value

    @field_validator("user_filter")
    @classmethod
    def _has_username(cls, value: str) -> str:
        if "{username}" not in value or not (value.startswith("(") and value.endswith(")")):
            raise ValueError("must be a parenthesized LDAP filter containing {username}")
        return value

    @model_validator(mode="after")
    def _transport(self) -> "LdapDirectory":
        if (self.bind_dn is None) != (self.bind_password is None):
            raise ValueError("set both bind_dn and bind_password, or neither (anonymous search)")
        for i, url in enumerate(self.urls):
            if url.startswith("ldap://") and not self.start_tls:
                host = urlsplit(url).hostname or ""
                if not self.allow_cleartext_on_loopback or not _is_loopback(host):
                    raise ValueError(f"urls[{i}]: ldap:// without start_tls sends passwords in clear; use "
                                     "ldaps:// or start_tls (allow_cleartext_on_loopback is for 127.0.0.1 only)")
        return self


class LdapAuthenticatorSettings(Model):
    """HTTP Basic credentials checked by binding to an LDAP directory as the user."""

    type: Literal["ldap"]
    directory: str
    realm: str = "iam-proxy"  # WWW-Authenticate: Basic realm="..."
    # Verified (username, password) pairs are remembered this long, and refused ones too, so a client
    # retrying a wrong password does not reach the directory (or an AD lockout counter) every time.
    cache_ttl_seconds: float = Field(default=60, ge=0, le=3600)
    negative_cache_ttl_seconds: float = Field(default=10, ge=0, le=600)
    cache_entries: int = Field(default=10_000, ge=0)
    max_username_length: int = Field(default=256, ge=1, le=1024)
