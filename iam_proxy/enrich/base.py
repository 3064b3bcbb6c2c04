"""The enricher interface: add what another source knows about an already authenticated identity."""

from __future__ import annotations

from typing import Protocol

from ..context import RequestContext
from ..core.identity import Identity


class Enricher(Protocol):
    name: str

    async def enrich(self, identity: Identity, ctx: RequestContext) -> Identity:
        """Return the identity with more facts (groups, roles, attributes), or the same one unchanged.

        Raise `AuthUnavailable` when the source is down (the request fails closed with 503), or
        `InvalidCredential` when the source says this identity must not pass (for example a user that
        was removed from the directory, when the enricher is configured to require the entry).
        """
        ...
