"""Which request and response headers may cross the proxy: the rules, in one place.

Everything here is a pure function of header names and values; no stage is imported, so the
reverse proxy, forward-auth and `explain` apply exactly the same rules.

- **Names are compared normalised**: lower case, with `_` and `.` read as `-`. WSGI, CGI and PHP
  backends map `X_Forwarded_User`, `X.Forwarded.User` and `X-Forwarded-User` to one variable
  (`HTTP_X_FORWARDED_USER`), so a spoof list compared on raw names is bypassed by an underscore.
- **Identity assertions from the client are dropped**: the families that widely used proxies and
  frameworks set and their backends believe (ours, oauth2-proxy, Pomerium, Authelia, Envoy and
  nginx client certificates, Apache/CGI `Remote-User`, cloud identity-aware proxies), plus names
  and `prefix*` patterns from the config.
- **Names with `_` or `.` are dropped** unless the operator keeps them (nginx's default too).
- **Method overrides** (`X-HTTP-Method-Override` and its cousins) are dropped: the decision is made
  on the request method, and a backend honouring one would run another.
- **Framing and hop-by-hop headers** are the proxy's own business: a policy's or a deny response's
  headers can never set them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "proxy-connection",
})
# Headers that frame the message or route it: never set by a policy, a deny response or a client copy.
FRAMING = HOP_BY_HOP | {"content-length", "host", "trailers"}

# Exact names (normalised) that some proxy or framework uses to tell a backend who the caller is.
IDENTITY_HEADERS = frozenset({
    # ours (the defaults of identity_headers) and oauth2-proxy's
    "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-forwarded-preferred-username",
    "x-forwarded-roles", "x-forwarded-access-token", "x-iam-assertion", "gap-auth", "gap-signature",
    # Authelia, Apache/CGI and generic conventions
    "remote-user", "remote-groups", "remote-email", "remote-name", "x-remote-user", "x-remote-group",
    "x-remote-groups", "auth-user", "x-auth-user", "x-authenticated-user", "x-authenticated-userid",
    "x-user", "x-user-id", "x-user-name", "x-username", "x-user-email", "x-email", "x-groups", "x-roles",
    "x-webauth-user", "x-id-token", "x-access-token", "x-userinfo",
    # Kong consumers, WSO2
    "x-consumer-id", "x-consumer-username", "x-consumer-custom-id", "x-consumer-groups",
    "x-credential-identifier", "x-anonymous-consumer", "x-jwt-assertion",
    # client certificates as Envoy, nginx, HAProxy and Traefik pass them
    "x-forwarded-client-cert", "ssl-client-cert", "ssl-client-verify", "ssl-client-s-dn",
    "ssl-client-i-dn", "x-client-cert", "x-client-verify", "x-client-dn", "x-forwarded-tls-client-cert",
    "x-forwarded-tls-client-cert-info",
    # cloud identity-aware proxies
    "cf-access-jwt-assertion", "cf-access-authenticated-user-email", "x-goog-iap-jwt-assertion",
})
# Prefixes (normalised): whole families, e.g. Pomerium's per-claim headers.
IDENTITY_PREFIXES = (
    "x-iam-", "x-auth-request-", "x-pomerium-", "x-amzn-oidc-", "x-goog-authenticated-user-",
    "x-ms-client-principal", "x-ms-token-", "x-ssl-client-", "x-remote-user-",
)

# Headers that ask a backend to run another method than the request line's (normalised names).
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
# The forward-auth request description: believed only from a trusted front proxy, never forwarded.
REQUEST_DESCRIPTION = frozenset({"x-original-uri", "x-original-method", "x-original-url",
                                 "x-forwarded-uri", "x-forwarded-method"})

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_METHOD = re.compile(r"^[A-Z]{1,20}$")


def normalise(name: str) -> str:
    """The name as WSGI/CGI/PHP backends see it: case, `_` and `.` do not tell names apart."""
    return name.lower().replace("_", "-").replace(".", "-")


def has_unusual_characters(name: str) -> bool:
    return "_" in name or "." in name


class SpoofList:
    """Inbound headers that claim an identity: the built-in families plus configured names and
    `prefix*` patterns, all compared after `normalise`."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        names = set(IDENTITY_HEADERS)
        prefixes = list(IDENTITY_PREFIXES)
        for entry in extra:
            if entry.endswith("*"):
                prefixes.append(normalise(entry[:-1]))
            else:
                names.add(normalise(entry))
        self.names = frozenset(names)
        self.prefixes = tuple(prefixes)

    def add(self, names: Iterable[str]) -> "SpoofList":
        return SpoofList([*self.names, *(p + "*" for p in self.prefixes), *names])

    @lru_cache(maxsize=2048)
    def __contains__(self, name: object) -> bool:
        key = normalise(str(name))
        return key in self.names or key.startswith(self.prefixes)


def method_override(headers: dict[str, str]) -> str | None:
    """The method a client asks a backend to run instead (first override header found), or None.
    `headers` has lower-case names; a malformed value is returned as is for the caller to refuse."""
    for name, value in headers.items():
        if normalise(name) in METHOD_OVERRIDE_HEADERS:
            return value.strip().upper()
    return None


def is_method(value: str) -> bool:
    return bool(_METHOD.match(value))


def is_method_override(name: str) -> bool:
    return normalise(name) in METHOD_OVERRIDE_HEADERS


def settable(name: str) -> bool:
    """May a policy decision or a deny response set this header? Never framing or hop-by-hop ones,
    and only well-formed names."""
    return bool(_TOKEN.match(name)) and name.lower() not in FRAMING


def safe_value(value: str) -> bool:
    """No line breaks, NULs or other controls (a tab is allowed, as RFC 9110 allows it)."""
    return not _UNSAFE_VALUE.search(value)


def connection_listed(headers: Iterable[tuple[bytes, bytes]]) -> set[str]:
    """Names listed in `Connection` (hop-by-hop for this hop only)."""
    names: set[str] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(v.strip().lower() for v in value.decode("latin-1").split(",") if v.strip())
    return names


def strip_cookies(value: str, is_ours: Callable[[str], bool]) -> str:
    """The Cookie header without the cookies `is_ours(name)` claims (the proxy's own session)."""
    kept = [part for part in value.split(";")
            if part.strip() and not is_ours(part.strip().partition("=")[0].strip())]
    return "; ".join(p.strip() for p in kept)


def as_wire(value: str) -> str:
    """A value the proxy made (an identity field, a policy's header) as the latin-1 string of its
    UTF-8 bytes, so that every header travels byte for byte: inbound values are latin-1 strings of
    the bytes the client sent, and are written back out unchanged."""
    return value.encode("utf-8").decode("latin-1") if not value.isascii() else value
