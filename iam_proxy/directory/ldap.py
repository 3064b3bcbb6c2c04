"""An LDAP directory client (RFC 4511 operations, RFC 4513 binds, RFC 4515 filters) on top of ldap3.

ldap3 is synchronous, so every operation runs in this directory's own thread pool (`pool_size`
workers) and the event loop only awaits it, bounded by `deadline_seconds`. Connections are pooled:
one pool bound as the service account for searches, one for checking users' passwords, so a user's
bind never changes what the search connections may read. Servers are tried in order; one that fails
is skipped for `server_retry_seconds`, and an operation that loses its connection is retried once on a
fresh one (possibly on the next server).

Rules this module keeps, whatever the caller asks:
- transport is LDAPS or StartTLS with the certificate and host name verified (Python's own checks,
  TLS 1.2 or later); cleartext only where settings allowed it for a loopback server;
- referrals are never followed (a referral would carry the user's password to another server);
- values put into a filter are escaped (RFC 4515), so a login name cannot change the filter;
- an empty, blank or NUL-containing password is refused before any bind (RFC 4513 5.1.2: such a bind
  is an "unauthenticated bind" that many servers answer with success);
- ldap3 objects never leave this module: callers get `DirectoryUser`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from ldap3 import ANONYMOUS, BASE, LEVEL, SIMPLE, SUBTREE, SYNC, Connection, Server
from ldap3.core.exceptions import LDAPCommunicationError, LDAPException, LDAPResponseTimeoutError

from ..core.claims import first
from ..core.errors import ConfigError
from ..settings.directory import LdapDirectory
from .names import dn_is_within, escape_filter_value, first_rdn_value, normalize_dn, password_is_usable
from .pool import ConnectionPool, PooledConnection, ServerSlot, VerifiedTls, close_quietly

log = logging.getLogger("iam_proxy.directory.ldap")

T = TypeVar("T")

# Results of a search that still carry usable entries, or that mean "no entry here".
_SUCCESS, _SIZE_LIMIT_EXCEEDED, _REFERRAL, _NO_SUCH_OBJECT = 0, 4, 10, 32
_INVALID_CREDENTIALS, _UNWILLING_TO_PERFORM = 49, 53
# Bind answers that are the server's problem, not the password's: try another server, then 503.
_SERVER_SIDE_BIND_CODES = {1, 2, 3, 51, 52, 80}
# Active Directory explains a refused bind with "data <code>" in the diagnostic message.
_AD_BIND_DETAILS = {"525": "user not found", "52e": "wrong password", "530": "logon not permitted now",
                    "531": "logon not permitted from this workstation", "532": "password expired",
                    "533": "account disabled", "701": "account expired", "773": "password must be changed",
                    "775": "account locked out"}
_AD_DATA_CODE = re.compile(r"data ([0-9a-f]{3})", re.IGNORECASE)
_FILTER_BATCH = 50  # group DNs per OR-filter when walking nested groups
_NO_ATTRIBUTES = ["1.1"]  # RFC 4511 4.5.1.8: return no attributes
_CONNECTION_LOST = (LDAPCommunicationError, LDAPResponseTimeoutError, OSError)


class DirectoryError(Exception):
    """Base of this module's errors; the message is for logs (it never holds a password)."""


class DirectoryUnavailable(DirectoryError):
    """No server could answer: down, timed out, TLS refused, or the service account could not bind."""


class LookupFailed(DirectoryError):
    """The directory answered, and the answer refuses the user: `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DirectoryUser:
    dn: str
    username: str
    email: str | None = None
    name: str | None = None
    groups: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)




def _values(attributes: Any, name: str | None) -> list[str]:
    if not name:
        return []
    value = attributes.get(name)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value]
    return [value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)]


class LdapDirectoryClient:
    """Async facade over one configured directory; safe to share between authenticator and enricher."""

    def __init__(self, settings: LdapDirectory) -> None:
        self.settings = settings
        self.id = settings.id
        self._slots = [self._slot(url) for url in settings.urls]
        self._slots_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=settings.pool_size,
                                            thread_name_prefix=f"ldap-{settings.id}")
        self._search_pool = ConnectionPool(settings.pool_size, lambda: self._connect(service=True))
        self._bind_pool = ConnectionPool(settings.pool_size, lambda: self._connect(service=False))

    # ------------------------------------------------------------------ public, async

    async def verify_password(self, username: str, password: str) -> DirectoryUser:
        """Find exactly one entry for `username`, bind as it with `password`, then read its groups."""
        if not password_is_usable(password):
            raise LookupFailed("password_empty", "empty, blank or NUL-containing password refused before bind")
        return await self._run(self._verify_password_sync, username, password)

    async def find_user(self, value: str, *, filter_template: str | None = None,
                        by_dn: bool = False) -> DirectoryUser | None:
        """The entry for an already authenticated identity (with its groups), or None if there is none.

        `filter_template` uses `{value}`; without it, the directory's user_filter gets `value` as
        `{username}`. With `by_dn`, `value` is the entry's DN and must lie under user_base_dn.
        """
        return await self._run(self._find_user_sync, value, filter_template, by_dn)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._search_pool.close()
        self._bind_pool.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn, *args)
        try:
            return await asyncio.wait_for(future, timeout=self.settings.deadline_seconds)
        except asyncio.TimeoutError:
            raise DirectoryUnavailable(f"directory {self.id}: no answer within "
                                       f"{self.settings.deadline_seconds}s") from None

    # ------------------------------------------------------------------ operations, in a worker thread

    def _verify_password_sync(self, username: str, password: str) -> DirectoryUser:
        search_filter = self.settings.user_filter.replace("{username}", escape_filter_value(username))
        found = self._search_user(self.settings.user_base_dn, search_filter, self._user_scope())
        if found is None:
            raise LookupFailed("user_not_found", f"no entry matches {search_filter!r}")
        dn, attributes = found
        self._bind_as(dn, password)
        return self._to_user(dn, attributes)

    def _find_user_sync(self, value: str, filter_template: str | None, by_dn: bool) -> DirectoryUser | None:
        if by_dn:
            if not dn_is_within(value, self.settings.user_base_dn):
                raise LookupFailed("user_outside_base", f"{value!r} is not under {self.settings.user_base_dn!r}")
            found = self._search_user(value, "(objectClass=*)", BASE)
        else:
            escaped = escape_filter_value(value)
            search_filter = (filter_template.replace("{value}", escaped) if filter_template
                             else self.settings.user_filter.replace("{username}", escaped))
            found = self._search_user(self.settings.user_base_dn, search_filter, self._user_scope())
        if found is None:
            return None
        return self._to_user(*found)

    def _user_scope(self) -> str:
        return SUBTREE if self.settings.user_scope == "subtree" else LEVEL

    def _user_attributes(self) -> list[str]:
        s = self.settings
        names = [s.username_attribute, s.email_attribute, s.name_attribute, *s.attributes.values()]
        if "member_of" in s.groups.sources:
            names.append("memberOf")
        return sorted({n for n in names if n})

    def _search_user(self, base: str, search_filter: str, scope: str) -> tuple[str, Any] | None:
        """Exactly one entry, or None; more than one is refused (never pick the first)."""
        def search(conn: Connection) -> tuple[int, list[dict[str, Any]]]:
            conn.search(base, search_filter, search_scope=scope, attributes=self._user_attributes(),
                        size_limit=2, time_limit=self.settings.timeout_seconds)
            return conn.result["result"], list(conn.response or [])

        code, response = self._with_connection(self._search_pool, search)
        if code in (_REFERRAL, _NO_SUCH_OBJECT):
            return None
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            raise DirectoryUnavailable(f"directory {self.id}: user search failed with result {code}")
        # Continuation references (searchResRef) are dropped: referrals are never chased.
        entries = [r for r in response if r.get("type") == "searchResEntry"]
        if len(entries) > 1 or code == _SIZE_LIMIT_EXCEEDED:
            raise LookupFailed("user_ambiguous", f"more than one entry matches {search_filter!r}")
        if not entries:
            return None
        return entries[0]["dn"], entries[0]["attributes"]

    def _bind_as(self, dn: str, password: str) -> None:
        def bind(conn: Connection) -> tuple[int, str]:
            conn.user, conn.password = dn, password
            try:
                conn.bind()
            finally:
                conn.password = None  # pooled connections do not keep users' passwords
            return conn.result["result"], str(conn.result.get("message") or "")

        code, message = self._with_connection(self._bind_pool, bind)
        if code == _SUCCESS:
            return
        if code in _SERVER_SIDE_BIND_CODES:
            raise DirectoryUnavailable(f"directory {self.id}: bind for {dn!r} failed with result {code}")
        ad = _AD_DATA_CODE.search(message)
        detail = _AD_BIND_DETAILS.get(ad.group(1).lower(), f"AD code {ad.group(1)}") if ad else message or "-"
        raise LookupFailed("bind_refused", f"bind as {dn!r} refused (result {code}: {detail})")

    def _to_user(self, dn: str, attributes: Any) -> DirectoryUser:
        s = self.settings
        extra: dict[str, Any] = {"dn": dn}
        for name, attribute in s.attributes.items():
            values = _values(attributes, attribute)
            if values:
                extra[name] = values[0] if len(values) == 1 else values
        username = first(_values(attributes, s.username_attribute)) or first_rdn_value(dn)
        return DirectoryUser(dn=dn, username=username, email=first(_values(attributes, s.email_attribute)),
                             name=first(_values(attributes, s.name_attribute)),
                             groups=self._groups(dn, username, attributes), attributes=extra)

    def _groups(self, dn: str, username: str, attributes: Any) -> tuple[str, ...]:
        cfg = self.settings.groups
        group_dns: dict[str, None] = {}
        if "member_of" in cfg.sources:
            group_dns.update(dict.fromkeys(_values(attributes, "memberOf")))
        escaped_dn = escape_filter_value(dn)
        if "member" in cfg.sources:
            group_dns.update(dict.fromkeys(self._search_groups(
                f"(|(&(objectClass=groupOfNames)(member={escaped_dn}))"
                f"(&(objectClass=groupOfUniqueNames)(uniqueMember={escaped_dn}))"
                f"(&(objectClass=group)(member={escaped_dn})))")))
        if "member_uid" in cfg.sources:
            group_dns.update(dict.fromkeys(self._search_groups(
                f"(&(objectClass=posixGroup)(memberUid={escape_filter_value(username)}))")))
        if cfg.nested == "ad_in_chain":
            group_dns.update(dict.fromkeys(self._search_groups(
                f"(&(objectClass=group)(member:1.2.840.113556.1.4.1941:={escaped_dn}))")))
        elif cfg.nested == "walk":
            group_dns.update(dict.fromkeys(self._walk_nested(list(group_dns))))
        names = [first_rdn_value(g) if cfg.name == "cn" else g for g in group_dns]
        unique = sorted(dict.fromkeys(names))
        if len(unique) > cfg.max_groups:
            log.warning("directory %s: %s has %d groups, keeping %d", self.id, dn, len(unique), cfg.max_groups)
            unique = unique[:cfg.max_groups]
        return tuple(unique)

    def _walk_nested(self, direct: list[str]) -> list[str]:
        """Groups that contain the given groups, level by level, up to max_depth; cycles end the walk."""
        cfg = self.settings.groups
        seen = {normalize_dn(g) for g in direct}
        frontier, found = list(direct), []
        for _ in range(cfg.max_depth):
            parents: list[str] = []
            for start in range(0, len(frontier), _FILTER_BATCH):
                batch = frontier[start:start + _FILTER_BATCH]
                terms = "".join(f"(member={escape_filter_value(g)})(uniqueMember={escape_filter_value(g)})"
                                for g in batch)
                for parent in self._search_groups(f"(|{terms})"):
                    key = normalize_dn(parent)
                    if key not in seen:
                        seen.add(key)
                        parents.append(parent)
            if not parents or len(seen) >= cfg.max_groups:
                found += parents
                break
            found += parents
            frontier = parents
        return found

    def _search_groups(self, search_filter: str) -> list[str]:
        cfg = self.settings.groups

        def search(conn: Connection) -> tuple[int, list[dict[str, Any]]]:
            conn.search(cfg.base_dn, search_filter, search_scope=SUBTREE, attributes=_NO_ATTRIBUTES,
                        size_limit=cfg.max_groups, time_limit=self.settings.timeout_seconds)
            return conn.result["result"], list(conn.response or [])

        code, response = self._with_connection(self._search_pool, search)
        if code in (_REFERRAL, _NO_SUCH_OBJECT):
            return []
        if code == _SIZE_LIMIT_EXCEEDED:
            log.warning("directory %s: group search hit the size limit of %d", self.id, cfg.max_groups)
        elif code != _SUCCESS:
            raise DirectoryUnavailable(f"directory {self.id}: group search failed with result {code}")
        return [r["dn"] for r in response if r.get("type") == "searchResEntry"]

    # ------------------------------------------------------------------ connections and failover

    def _slot(self, url: str) -> ServerSlot:
        s = self.settings
        parts = urlsplit(url)
        host = parts.hostname or ""
        use_ssl = parts.scheme == "ldaps"
        port = parts.port or (636 if use_ssl else 389)
        tls = None
        if use_ssl or s.start_tls:
            try:
                context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"directories (id {s.id}).ca_file: cannot load {s.ca_file} ({exc})") from None
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            tls = VerifiedTls(context, s.tls_server_name or host)
        server = Server(host, port=port, use_ssl=use_ssl, tls=tls, get_info=None,
                        connect_timeout=s.connect_timeout_seconds)
        return ServerSlot(url=url, server=server, start_tls=not use_ssl and s.start_tls)

    def _candidates(self) -> list[ServerSlot]:
        now = time.monotonic()
        with self._slots_lock:
            up = [slot for slot in self._slots if slot.down_until <= now]
        return up or list(self._slots)  # all marked down: try them all rather than refuse outright

    def _mark_down(self, slot: ServerSlot, why: str) -> None:
        log.warning("directory %s: server %s failed (%s); skipping it for %ss",
                    self.id, slot.url, why, self.settings.server_retry_seconds)
        with self._slots_lock:
            slot.down_until = time.monotonic() + self.settings.server_retry_seconds

    def _connect(self, *, service: bool) -> PooledConnection:
        s = self.settings
        failures = []
        for slot in self._candidates():
            if service and s.bind_dn is not None:
                user, password, auth = s.bind_dn, s.bind_password.get_secret_value(), SIMPLE  # type: ignore[union-attr]
            elif service:
                user, password, auth = None, None, ANONYMOUS
            else:
                user, password, auth = None, None, SIMPLE
            conn = Connection(slot.server, user=user, password=password, authentication=auth,
                              client_strategy=SYNC, auto_bind=False, auto_referrals=False, read_only=True,
                              raise_exceptions=False, receive_timeout=s.timeout_seconds,
                              return_empty_attributes=False)
            try:
                conn.open(read_server_info=False)
                if slot.start_tls and not conn.start_tls(read_server_info=False):
                    raise DirectoryError("StartTLS refused")
                if service and not conn.bind(read_server_info=False):
                    raise DirectoryError(f"service account bind failed with result {conn.result['result']}")
            except (LDAPException, DirectoryError, OSError) as exc:
                close_quietly(conn)
                why = f"{type(exc).__name__}: {exc}"
                self._mark_down(slot, why)
                failures.append(f"{slot.url}: {why}")
                continue
            return PooledConnection(conn, slot, time.monotonic())
        raise DirectoryUnavailable(f"directory {self.id}: no server available ({'; '.join(failures)})")

    def _with_connection(self, pool: ConnectionPool, operation: Callable[[Connection], T]) -> T:
        """Run `operation` on a pooled connection. If the connection turns out to be broken (the server
        restarted, an idle timeout closed it), the pool's other idle connections are dropped too and the
        operation is retried once on a fresh connection, on the next server if this one is now down."""
        try:
            return self._run_on(pool, pool.take(), operation)
        except _CONNECTION_LOST:
            pool.close()
        pooled = pool.fresh()
        try:
            return self._run_on(pool, pooled, operation)
        except _CONNECTION_LOST as exc:
            self._mark_down(pooled.slot, f"{type(exc).__name__}: {exc}")
            raise DirectoryUnavailable(f"directory {self.id}: {type(exc).__name__}") from None

    def _run_on(self, pool: ConnectionPool, pooled: PooledConnection, operation: Callable[[Connection], T]) -> T:
        """The connection goes back to the pool only after a clean operation; otherwise it is closed."""
        try:
            result = operation(pooled.connection)
        except _CONNECTION_LOST:
            close_quietly(pooled.connection)
            raise
        except LDAPException as exc:
            close_quietly(pooled.connection)
            raise DirectoryUnavailable(f"directory {self.id}: {type(exc).__name__}: {exc}") from None
        pool.give_back(pooled)
        return result
