"""The `saml` authenticator: the browser session a verified SAML login left behind.

No session cookie, or a session from another login (OIDC, another SAML SP) -> "not mine" (None);
the session itself is sealed and checked by the session manager, so there is no "bad credential"
case here beyond what `SessionManager.load` already refuses.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from ...context import RequestContext
from ...session import SessionManager
from ..identity import Identity


class SAMLSessionAuthenticator:
    challenge = None

    def __init__(self, name: str, sessions: SessionManager, clock=time.time) -> None:
        self.name = name
        self._sessions = sessions
        self._clock = clock

    def login_url(self, ctx: RequestContext) -> str | None:
        """Where a browser without a session is sent (the pipeline redirects); API clients get 401."""
        if "authorization" in ctx.headers or ctx.method not in ("GET", "HEAD"):
            return None
        if "text/html" not in ctx.headers.get("accept", ""):
            return None
        return f"/.iam/saml/login?{urlencode({'rd': ctx.path_with_query})}"

    async def authenticate(self, ctx: RequestContext) -> Identity | None:
        session = await self._sessions.load_for(ctx)
        if session is None or session.protocol != "saml" or session.provider != self.name:
            return None
        # The IdP's SessionNotOnOrAfter (Identity.expires_at) ends the session before its own lifetime.
        expires_at = session.identity.expires_at
        if expires_at is not None and expires_at <= self._clock():
            return None
        return session.identity
