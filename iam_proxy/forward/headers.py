"""Request and response header rewriting for the upstream hop (the rules live in header_safety).

Order matters and is fixed here: drop hop-by-hop headers (and any named in `Connection`), drop every
inbound header that claims an identity or describes another request, the client's credentials and
the proxy's own cookies, then add ours. Every value travels byte for byte (see `as_wire`).
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..context import RequestContext
from ..core.errors import InvalidCredential
from ..core.header_safety import (HOP_BY_HOP, REQUEST_DESCRIPTION, SpoofList, as_wire, connection_listed,
                             has_unusual_characters, is_method_override, safe_value, settable, strip_cookies)
from ..core.identity import Identity
from ..core.networks import TrustedNetworks
from ..settings.forward import IdentityHeaders
from ..settings.routes import Route

# C0 controls, DEL, NEL and the Unicode line and paragraph separators
_UNSAFE = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")

FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
                       "x-real-ip", "forwarded"})


def _is_proxy_cookie(session_cookie: str):
    def is_ours(name: str) -> bool:
        bare = name.removeprefix("__Host-").removeprefix("__Secure-")
        return name == session_cookie or bare.startswith("iam_")
    return is_ours


class HeaderRewriter:
    def __init__(self, settings: IdentityHeaders, trusted: TrustedNetworks,
                 session_cookie: str = "__Host-iam_session") -> None:
        self.settings = settings
        self.trusted = trusted
        self.identity_names = [settings.user, settings.email, settings.groups, settings.preferred_username,
                               settings.assertion.header]
        self.spoofed = SpoofList([*settings.spoofable, *self.identity_names, settings.access_token])
        self._is_proxy_cookie = _is_proxy_cookie(session_cookie)
        # one verdict per (raw name, route's opt-ins): a request's headers are judged by a dict lookup
        self._verdicts = lru_cache(maxsize=8192)(self._verdict)

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
        """The original client (see TrustedNetworks.client_of)."""
        return self.trusted.client_of(ctx.peer, ctx.headers.get("x-forwarded-for"))

    def keeps(self, name: str, route: Route | None) -> bool:
        """May this inbound header (lower-case name) reach the upstream?"""
        opted = (route.pass_authorization, route.method_override) if route is not None else (False, False)
        return self._verdicts(name.encode("latin-1"), *opted) is not None

    def _verdict(self, raw_name: bytes, pass_authorization: bool, method_override: bool) -> str | None:
        """The lower-case name when the header may pass, None when it is dropped."""
        name = raw_name.decode("latin-1").lower()
        return name if self._keeps(name, pass_authorization, method_override) else None

    def _keeps(self, name: str, pass_authorization: bool, method_override: bool) -> bool:
        if name in HOP_BY_HOP or name in FORWARDED or name in REQUEST_DESCRIPTION or name in self.spoofed:
            return False
        if has_unusual_characters(name) and not self.settings.keep_underscored_names:
            return False
        if name == "authorization":
            return pass_authorization
        if is_method_override(name):
            return method_override
        return True

    def identity_headers(self, identity: Identity | None, assertion: str | None) -> list[tuple[str, str]]:
        """Every identity header the proxy owns, with "" for the ones this identity has no value for
        (forward-auth answers carry them all, so a front proxy overwrites any client copy)."""
        if identity is None or identity.anonymous:
            values = ["", "", "", "", assertion or ""]
        else:
            values = [identity.sub, identity.email or "", ",".join(identity.groups), identity.username or "",
                      assertion or ""]
        return [(name, as_wire(value)) for name, value in zip(self.identity_names, values)]

    def policy_headers(self, headers: dict[str, str]) -> list[tuple[str, str]]:
        """A decision's headers that may be set: never identity, framing or hop-by-hop headers."""
        return [(name, as_wire(value)) for name, value in headers.items()
                if settable(name) and safe_value(value) and name not in self.spoofed]

    def set_headers(self, ctx: RequestContext, identity: Identity, assertion: str | None,
                    policy: dict[str, str]) -> list[tuple[str, str]]:
        """What the proxy sets on the upstream request: the identity headers (all of them, "" where
        the identity has no value), the verified access token where the route passes it, the policy's."""
        out = self.identity_headers(identity, assertion)
        route = ctx.route.settings if ctx.route is not None else None
        if route is not None and route.pass_access_token and ctx.access_token:
            out.append((self.settings.access_token, ctx.access_token))
        return out + self.policy_headers(policy)

    def upstream_request_headers(self, ctx: RequestContext, set_headers: list[tuple[str, str]],
                                 removed: frozenset[str], preserve_host: bool) -> list[tuple[str, str]]:
        """The client's headers the upstream may see (less `removed`), the X-Forwarded-* set, the
        request id, and the non-empty `set_headers`."""
        route = ctx.route.settings if ctx.route is not None else None
        opted = (route.pass_authorization, route.method_override) if route is not None else (False, False)
        drop = {"x-request-id", *removed}
        if "connection" in ctx.headers:
            drop |= connection_listed(ctx.raw_headers)
        if not preserve_host:
            drop.add("host")
        verdict = self._verdicts
        out: list[tuple[str, str]] = []
        for name, value in ctx.raw_headers:
            key = verdict(name, *opted)
            if key is None or key in drop:
                continue
            text = value.decode("latin-1")
            if key == "cookie":
                text = strip_cookies(text, self._is_proxy_cookie)
                if not text:
                    continue
            out.append((key, text))
        xff, proto, host = self.forwarded_for(ctx)
        out += [("x-forwarded-for", xff), ("x-forwarded-proto", proto), ("x-forwarded-host", host),
                ("x-request-id", ctx.request_id)]
        return out + [(name, value) for name, value in set_headers if value]


def response_headers(raw: list[tuple[bytes, bytes]], withheld: frozenset[bytes] = frozenset()
                     ) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers minus hop-by-hop ones, `Date` (the server adds its own) and
    `withheld` (the signed assertion: an upstream echoing it must not hand it to the client)."""
    listed = connection_listed(raw)
    out = []
    for name, value in raw:
        key = name.lower()
        text = key.decode("latin-1")
        if text not in HOP_BY_HOP and text not in listed and key != b"date" and key not in withheld:
            out.append((name, value))
    return out
