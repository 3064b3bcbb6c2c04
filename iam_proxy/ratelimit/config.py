"""Rate limit and load shedding settings: the `rate_limits:` section (docs/rate-limiting.md).
Imported by `iam_proxy.settings`; route names are checked there against the routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


OnStoreError = Literal["open", "closed"]
KeyKind = Literal["identity", "client", "route", "network"]


class LimitSettings(_Model):
    """`requests` per `per_seconds` for each value of `key`; up to `burst` of them at once."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    key: KeyKind
    requests: int = Field(ge=1)
    per_seconds: int = Field(ge=1, le=86400)
    burst: int | None = Field(default=None, ge=1)  # default: `requests`
    routes: list[str] = []  # empty: every route
    # when the store cannot be reached; unset: the section's `on_store_error` (a tier's: closed)
    on_store_error: OnStoreError | None = None

    @property
    def capacity(self) -> int:
        return self.burst or self.requests


class RedisLimitStore(_Model):
    url: str = "redis://127.0.0.1:6379/0"
    password: SecretStr | None = None
    key_prefix: str = "iam-proxy:rl:"
    timeout_seconds: float = Field(default=0.1, gt=0, le=5)  # per check, waiting for a connection included
    max_connections: int = Field(default=32, ge=1, le=1024)
    health_interval_seconds: float = Field(default=1.0, gt=0)


class NetworkKey(_Model):
    """`network` keys group source addresses by prefix: one counter per /24 (IPv4) or /64 (IPv6)."""

    ipv4_prefix: int = Field(default=32, ge=8, le=32)
    ipv6_prefix: int = Field(default=64, ge=16, le=128)


class AdaptiveSettings(_Model):
    """Adaptive concurrency toward upstreams with a per-client fair share (control law in
    docs/rate-limiting.md)."""

    enabled: bool = False
    latency_target_ms: float = Field(default=250, gt=0)
    max_error_rate: float = Field(default=0.2, gt=0, le=1)  # 5xx share of a window that halves the limit
    backoff: float = Field(default=0.5, gt=0, lt=1)
    initial_limit: int = Field(default=64, ge=1)
    min_limit: int = Field(default=2, ge=1)
    max_limit: int = Field(default=1000, ge=1)
    interval_seconds: float = Field(default=1.0, gt=0)
    min_samples: int = Field(default=10, ge=1)
    key: Literal["identity", "client", "network"] = "client"

    @model_validator(mode="after")
    def _bounds(self) -> "AdaptiveSettings":
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError("initial_limit: must lie between min_limit and max_limit")
        return self


class RateLimitSettings(_Model):
    store: Literal["memory", "redis"] = "memory"
    redis: RedisLimitStore | None = None
    on_store_error: OnStoreError = "closed"
    limits: list[LimitSettings] = []
    # named limits a policy result selects with `rate_limit: "<tier>"`; they replace the limits
    # above that use the same key kind
    tiers: dict[str, list[LimitSettings]] = {}
    # identity attributes that name the calling client, first present wins (then the certificate)
    client_attributes: list[str] = ["client_id", "authorized_party", "app_id", "api_key_id"]
    network: NetworkKey = NetworkKey()
    memory_max_keys: int = Field(default=100_000, ge=100)
    adaptive: AdaptiveSettings = AdaptiveSettings()

    @model_validator(mode="after")
    def _consistent(self) -> "RateLimitSettings":
        if self.store == "redis" and self.redis is None:
            raise ValueError("redis: store 'redis' needs redis.url")
        seen: set[str] = set()
        for where, limit in self.all_limits():
            if limit.id in seen:
                raise ValueError(f"rate_limits.{where}.id: duplicate {limit.id!r}")
            seen.add(limit.id)
        return self

    def all_limits(self) -> list[tuple[str, LimitSettings]]:
        """(key path, limit) of every configured limit, tiers included."""
        found = [(f"limits[{i}]", limit) for i, limit in enumerate(self.limits)]
        for name, limits in self.tiers.items():
            found += [(f"tiers.{name}[{i}]", limit) for i, limit in enumerate(limits)]
        return found
