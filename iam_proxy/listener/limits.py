"""`listeners.limits`: what one connection may take before it is cut off (listener/protocol.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ListenerLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # From a connection's first byte (or a keep-alive request's first byte) to the end of its request
    # head; also bounds the TLS handshake. A slowloris client is answered 408 and cut off.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    # Longest silence while a request body is being received (not while the proxy itself holds back).
    body_idle_timeout_seconds: float = Field(default=30.0, gt=0)
    max_uri_bytes: int = Field(default=8192, gt=0)             # the request target: 414 beyond
    max_header_line_bytes: int = Field(default=16384, gt=0)    # one header, name and value: 431
    max_header_count: int = Field(default=100, gt=0)           # 431
    max_header_bytes: int = Field(default=65536, gt=0)         # all headers together: 431
    # Open connections from one client address (the TCP peer, before any X-Forwarded-For): a new one
    # beyond this is closed at once.
    max_connections_per_client: int = Field(default=256, gt=0)

    @model_validator(mode="after")
    def _line_within_total(self) -> "ListenerLimits":
        if self.max_header_line_bytes > self.max_header_bytes:
            raise ValueError("max_header_line_bytes must not exceed max_header_bytes")
        return self
