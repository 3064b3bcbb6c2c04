"""Browser sessions, shared by every interactive login (OIDC today, SAML next).

The public interface is this module; stores are private details chosen by `sessions.store`:

    manager = build_session_manager(settings.sessions)      # once, at startup
    session, set_cookie = await manager.create(             # after a login has been fully verified
        identity=identity, provider="kc", protocol="oidc", previous=old_session,
        idp_session_id=sid, tokens={"id_token": ..., "refresh_token": ...}, token_expires_at=exp)
    session = await manager.load(ctx.headers)               # None: no cookie, bad cookie, ended, expired
    session = await manager.load_for(ctx)                   # the same; an ended one: ctx.missing_reason, cookie cleared
    set_cookie = await manager.save(session)                # after a refresh changed it (None: unchanged cookie)
    clear_cookie = await manager.destroy(session)           # logout
    ended = await manager.end_idp_session("kc", idp_session_id=sid, sub=None)  # back-channel logout

Guarantees:
- `create` always mints a new random session id (rotation at login) and ends `previous`, so a
  session id seen before login is never valid after it (no session fixation).
- The cookie is `__Host-` prefixed by default, `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`, and its
  value is sealed (AES-256-GCM, key derived from `sessions.secret`): it cannot be read or forged.
- Store "cookie": the whole session is sealed in the cookie. Ended sessions go on a revocation list
  (revocations.py) until they would have expired: in Redis when `sessions.redis` is set, else in
  `sessions.revocation_file`, so a copied cookie stops working at logout on every replica (Redis) or
  every worker of the host (file), also after a restart; `lookup` says `session_revoked`.
- Store "redis": the cookie holds only a sealed ticket (the session id); the session lives in Redis,
  so several replicas share sessions and logout. Redis unreachable -> AuthUnavailable (503).
- Tokens in a session (`tokens`) are secrets: never logged, never in an error or an audit event.

One-time values for login flows (OIDC `state`, SAML request ids, logout token `jti`) are consumed
with `manager.consume_once(kind, value, ttl)`, which is atomic in Redis and in memory.
"""

from __future__ import annotations

from ._model import Session
from .manager import SessionManager, build_session_manager

__all__ = ["Session", "SessionManager", "build_session_manager"]
