"""The authenticator interface shared by every credential kind."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..context import RequestContext
from ..core.identity import Identity


class Authenticator(Protocol):
    name: str

    @property
    def challenge(self) -> str | None:
        """The value a 401 carries in WWW-Authenticate when this authenticator found no credential."""
        ...

    async def authenticate(self, ctx: RequestContext) -> Identity | None:
        """None: the request has no credential of my kind. Raise InvalidCredential: it has, but bad."""
        ...


@runtime_checkable
class Interactive(Protocol):
    """An authenticator a browser can sign in with (OIDC or SAML sessions)."""

    def login_url(self, ctx: RequestContext) -> str | None:
        """Where a browser without a session is sent to sign in; None for a non-browser request."""
        ...


def authorization_credentials(ctx: RequestContext, scheme: str, header: str = "authorization") -> str | None:
    """The credentials after `<scheme> ` in an Authorization-style header, stripped ("" when empty);
    None when the header is absent or carries another scheme (not this authenticator's credential)."""
    value = ctx.headers.get(header)
    if value is None:
        return None
    found, _, credentials = value.strip().partition(" ")
    if found.lower() != scheme:
        return None
    return credentials.strip()
