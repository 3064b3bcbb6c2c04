"""Request and response header rewriting for the upstream hop.

Order matters and is fixed here: drop hop-by-hop headers (and any named in `Connection`), drop every
inbound copy of a header the proxy sets or that is configured as spoofable, then add ours.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from ..authn.identity import Identity
from ..context import RequestContext
from ..errors import InvalidCredential
from ..settings import IdentityHeaders

# C0 controls, DEL, NEL and the Unicode line and paragraph separators
_UNSAFE = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "proxy-connection",
})
FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"})
# A front proxy's client certificate headers (Envoy, nginx): consumed by the x509 authenticator,
# never passed on, whoever sent them.
CLIENT_CERT_HEADERS = frozenset({"x-forwarded-client-cert", "ssl-client-cert"})


def connection_listed(headers: list[tuple[bytes, bytes]]) -> set[str]:
    names: set[str] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(v.strip().lower() for v in value.decode("latin-1").split(",") if v.strip())
    return names


class TrustedProxies:
    def __init__(self, cidrs: list[str]) -> None:
        self._networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    @lru_cache(maxsize=4096)
    def __contains__(self, address: str) -> bool:  # type: ignore[override]
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)


class HeaderRewriter:
    def __init__(self, settings: IdentityHeaders, trusted: TrustedProxies) -> None:
        self.settings = settings
        self.trusted = trusted
        self.identity_names = {
            settings.user.lower(), settings.email.lower(), settings.groups.lower(),
            settings.preferred_username.lower(), settings.assertion.header.lower(),
        }
        self.stripped = self.identity_names | {h.lower() for h in settings.spoofable} | CLIENT_CERT_HEADERS

    @staticmethod
    def check_forwardable(identity: Identity) -> None:
        """Refuse an identity whose values cannot travel in a header as they are: a line break in a
        username could forge a header, a comma in a group name would read as two groups."""
        values = [identity.sub, identity.email or "", identity.username or "", *identity.groups]
        if any(_UNSAFE.search(v) for v in values) or any("," in g for g in identity.groups):
            raise InvalidCredential("identity_unsafe",
                                    message="The identity contains characters that cannot be forwarded.")

    def forwarded_for(self, ctx: RequestContext) -> tuple[str, str, str]:
        """X-Forwarded-For/-Proto/-Host, believing the client's own values only from trusted proxies."""
        if ctx.peer in self.trusted:
            prior = ctx.headers.get("x-forwarded-for")
            xff = f"{prior}, {ctx.peer}" if prior else ctx.peer
            proto = ctx.headers.get("x-forwarded-proto", ctx.scheme)
            host = ctx.headers.get("x-forwarded-host", ctx.host)
            return xff, proto, host
        return ctx.peer, ctx.scheme, ctx.host

    def client_address(self, ctx: RequestContext) -> str:
        """The original client: the first X-Forwarded-For hop when the peer is a trusted proxy."""
        if ctx.peer in self.trusted and "x-forwarded-for" in ctx.headers:
            return ctx.headers["x-forwarded-for"].split(",")[0].strip() or ctx.peer
        return ctx.peer

    def upstream_request_headers(self, ctx: RequestContext, identity: Identity | None, assertion: str | None,
                                 extra: dict[str, str], remove: tuple[str, ...],
                                 preserve_host: bool) -> list[tuple[str, str]]:
        drop = HOP_BY_HOP | FORWARDED | self.stripped | connection_listed(ctx.raw_headers) | {"x-request-id"}
        drop |= {r.lower() for r in remove} | ctx.consumed_headers
        if not preserve_host:
            drop = drop | {"host"}
        out: list[tuple[str, str]] = []
        for name, value in ctx.raw_headers:
            key = name.decode("latin-1").lower()
            if key in drop:
                continue
            out.append((key, value.decode("latin-1")))
        xff, proto, host = self.forwarded_for(ctx)
        out += [("x-forwarded-for", xff), ("x-forwarded-proto", proto), ("x-forwarded-host", host),
                ("x-request-id", ctx.request_id)]
        if identity is not None and not identity.anonymous:
            s = self.settings
            out.append((s.user, identity.sub))
            if identity.email:
                out.append((s.email, identity.email))
            if identity.groups:
                out.append((s.groups, ",".join(identity.groups)))
            if identity.username:
                out.append((s.preferred_username, identity.username))
        if assertion is not None:
            out.append((self.settings.assertion.header, assertion))
        for name, value in extra.items():
            if name.lower() in self.stripped:
                continue  # a policy may add headers, never forge identity headers
            out.append((name, value))
        return out


def response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers minus hop-by-hop ones and `Date` (the server adds its own)."""
    listed = connection_listed(raw)
    out = []
    for name, value in raw:
        key = name.lower().decode("latin-1")
        if key not in HOP_BY_HOP and key not in listed and key != "date":
            out.append((name, value))
    return out
