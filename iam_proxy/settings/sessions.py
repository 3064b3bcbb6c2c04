"""Browser sessions: the cookie, its lifetime and the optional Redis store."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from .base import Model


class RedisSessionStoreSettings(Model):
    """Redis shared by replicas: sessions (store "redis"), ended sessions, one-time login values."""

    url: str = "redis://127.0.0.1:6379/0"  # redis:// or rediss:// (TLS), with the database number
    key_prefix: str = "iam-proxy:"  # every key starts with it; give each proxy deployment its own
    timeout_seconds: float = Field(default=1.0, gt=0, le=30)  # per Redis call; past it: 503
    password: SecretStr | None = None  # or in the URL; prefer ${ENV} interpolation


class SessionSettings(Model):
    """Browser sessions (iam_proxy/session/): a sealed cookie, or a ticket into Redis."""

    # "cookie": the session is sealed into the cookie; "redis": the cookie holds a ticket into Redis.
    store: Literal["cookie", "redis"] = "cookie"
    # 32+ characters; older secrets still open cookies they sealed (rotation without logging all out).
    secret: SecretStr | None = None
    previous_secrets: list[SecretStr] = []  # older secrets that still open cookies (rotation)
    cookie_name: str = "__Host-iam_session"  # __Host- cookies need `secure` and are bound to the host
    # Secure cookies are only sent over HTTPS: false only for plain-HTTP development, with a
    # cookie_name without __Host- (`iam-proxy check` warns when a plain-HTTP listener keeps it true).
    secure: bool = True
    lifetime_seconds: int = Field(default=8 * 3600, ge=60)  # absolute; sign in again after this
    redis: RedisSessionStoreSettings | None = None  # needed by store "redis"; with "cookie", holds ended sessions
    # Ended sessions (logout, back-channel logout) when there is no `redis`: shared by the workers of
    # one host and kept across restarts. Give each proxy on a host its own file (or share Redis).
    revocation_file: Path = Path("var/state/revoked-sessions.jsonl")

    @model_validator(mode="after")
    def _consistent(self) -> "SessionSettings":
        if self.secret is not None and len(self.secret.get_secret_value()) < 32:
            raise ValueError("secret: must be at least 32 characters")
        if self.cookie_name.startswith("__Host-") and not self.secure:
            raise ValueError("cookie_name: a __Host- cookie must be secure")
        if self.store == "redis" and self.redis is None:
            raise ValueError("redis: store 'redis' needs redis.url")
        return self
