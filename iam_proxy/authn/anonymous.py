"""The anonymous authenticator, for public routes: it always yields an anonymous identity.

Placed last in a route's list, it only runs when every earlier authenticator said "not mine";
a bad credential raises before it is reached, so a bad token never falls back to anonymous.
"""

from __future__ import annotations

from ..context import RequestContext
from ..core.identity import Identity
from ..settings.authn import AnonymousAuthenticatorSettings


class AnonymousAuthenticator:
    challenge = None

    def __init__(self, name: str, settings: AnonymousAuthenticatorSettings) -> None:
        self.name = name
        self._identity = Identity(sub=settings.subject, method="anonymous")

    async def authenticate(self, ctx: RequestContext) -> Identity:
        return self._identity
