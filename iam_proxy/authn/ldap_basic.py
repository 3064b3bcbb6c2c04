"""HTTP Basic credentials (RFC 7617) checked against an LDAP directory or Active Directory.

The login name finds exactly one entry (escaped filter, see `directory/ldap.py`), the password is
checked by binding as that entry, and the entry's groups become Identity.groups. Outcomes:
  no `Authorization: Basic`               -> None (not mine: the route's next authenticator runs)
  malformed header, empty password,
  unknown user, several entries, bad bind -> 401 `invalid_username_or_password` (one public reason, so
                                             the answer does not tell which usernames exist; the log
                                             and the audit detail say which)
  directory down, timeout, TLS refused    -> 503 `ldap_unavailable`, never anonymous
Verified and refused (username, password) pairs are cached briefly under a keyed hash, never in clear.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass

from ..context import RequestContext
from ..core.cache import ExpiringCache
from ..core.errors import AuthUnavailable, InvalidCredential
from ..core.identity import Identity
from ..directory.ldap import DirectoryUnavailable, LdapDirectoryClient, LookupFailed
from ..settings.directory import LdapAuthenticatorSettings
from .base import authorization_credentials

log = logging.getLogger("iam_proxy.authn.ldap")

PUBLIC_REASON = "invalid_username_or_password"
_MAX_HEADER_BYTES = 8 * 1024


@dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"BasicCredentials(username={self.username!r}, password='***')"


def basic_credentials(ctx: RequestContext) -> BasicCredentials | None:
    """The `Authorization: Basic` credentials, None when the header is absent or another scheme."""
    encoded = authorization_credentials(ctx, "basic")
    if encoded is None:
        return None
    if not encoded or len(encoded) > _MAX_HEADER_BYTES:
        raise InvalidCredential("basic_malformed", message="The Basic credentials are malformed.")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidCredential("basic_malformed", message="The Basic credentials are malformed.") from None
    username, colon, password = decoded.partition(":")
    if not colon or not username:
        raise InvalidCredential("basic_malformed", message="The Basic credentials are malformed.")
    return BasicCredentials(username, password)


class LdapBasicAuthenticator:
    def __init__(self, name: str, settings: LdapAuthenticatorSettings, directory: LdapDirectoryClient,
                 clock=time.time) -> None:
        self.name = name
        self.settings = settings
        self.directory = directory
        self.challenge = f'Basic realm="{settings.realm}"'
        self._clock = clock
        self._cache_key = secrets.token_bytes(32)  # per process: cache keys are useless outside it
        self._verified: ExpiringCache[bytes, Identity] = ExpiringCache(settings.cache_entries)
        self._refused: ExpiringCache[bytes, str] = ExpiringCache(settings.cache_entries)

    async def authenticate(self, ctx: RequestContext) -> Identity | None:
        credentials = basic_credentials(ctx)
        if credentials is None:
            return None
        username = credentials.username
        if len(username) > self.settings.max_username_length or not username.isprintable():
            raise InvalidCredential(PUBLIC_REASON, message="The username or password is not valid.",
                                    detail="username too long or not printable")
        key = hmac.new(self._cache_key, f"{username}\x00{credentials.password}".encode(), hashlib.sha256).digest()
        cached = self._verified.get(key)
        if cached is not None:
            ctx.consumed_headers.add("authorization")
            return cached
        refused = self._refused.get(key)
        if refused is not None:
            raise InvalidCredential(PUBLIC_REASON, message="The username or password is not valid.",
                                    detail=f"{refused} (cached)")
        try:
            user = await self.directory.verify_password(username, credentials.password)
        except LookupFailed as exc:
            log.info("ldap login refused for %r on %s: %s", username, self.directory.id, exc.detail)
            self._refused.put(key, exc.reason, self.settings.negative_cache_ttl_seconds)
            raise InvalidCredential(PUBLIC_REASON, message="The username or password is not valid.",
                                    detail=exc.reason) from None
        except DirectoryUnavailable as exc:
            log.warning("ldap authenticator %s: %s", self.name, exc)
            raise AuthUnavailable("ldap_unavailable", message="The directory is temporarily unavailable.",
                                  detail=str(exc)) from None
        identity = Identity(
            sub=user.username, method="ldap", iss=f"ldap:{self.directory.id}", provider=self.directory.id,
            username=user.username, email=user.email, name=user.name, groups=user.groups,
            auth_time=int(self._clock()), amr=("pwd",), attributes=dict(user.attributes),
        )
        self._verified.put(key, identity, self.settings.cache_ttl_seconds)
        ctx.consumed_headers.add("authorization")  # the upstream never sees the directory password
        return identity
