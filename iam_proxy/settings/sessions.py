"""Browser sessions: the cookie, its lifetime and the optional Redis store."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from .base import Model


class RedisSessionStoreSettings(Model):
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "iam-proxy:"
    timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    password: SecretStr | None = None


class SessionSettings(Model):
    """Browser sessions (iam_proxy/session/): a sealed cookie, or a ticket into Redis."""

    store: Literal["cookie", "redis"] = "cookie"
    # 32+ characters; older secrets still open cookies they sealed (rotation without logging all out).
    secret: SecretStr | None = None
    previous_secrets: list[SecretStr] = []
    cookie_name: str = "__Host-iam_session"
    secure: bool = True  # only for plain-HTTP development, with a cookie_name without __Host-
    lifetime_seconds: int = Field(default=8 * 3600, ge=60)  # absolute; sign in again after this
    redis: RedisSessionStoreSettings | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "SessionSettings":
        if self.secret is not None and len(self.secret.get_secret_value()) < 32:
            raise ValueError("secret: must be at least 32 characters")
        if self.cookie_name.startswith("__Host-") and not self.secure:
            raise ValueError("cookie_name: a __Host- cookie must be secure")
        if self.store == "redis" and self.redis is None:
            raise ValueError("redis: store 'redis' needs redis.url")
        return self
