"""Where the proxy listens: ports, TLS, trusted front proxies, workers, forward-auth peers."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Model
from .limits import ListenerLimits


class TLSSettings(Model):
    cert_file: Path
    key_file: Path
    min_version: Literal["1.2", "1.3"] = "1.2"
    ciphers: str | None = None  # OpenSSL cipher string for TLS 1.2 (1.3 suites are OpenSSL's defaults)
    # Client certificates: "optional" asks for one, "required" refuses the handshake without one.
    # A certificate that is presented must verify (chain to client_ca_file, in date, not revoked).
    client_auth: Literal["none", "optional", "required"] = "none"
    client_ca_file: Path | None = None
    crl_file: Path | None = None  # PEM CRLs; when set, every issuing CA must have a current CRL
    crl_check: Literal["leaf", "chain"] = "leaf"
    # Certificate, key, CA bundle and CRLs are re-read when they change; 0 = never.
    reload_interval_seconds: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _client_ca(self) -> "TLSSettings":
        if self.client_auth != "none" and self.client_ca_file is None:
            raise ValueError("client_ca_file is required when client_auth is not 'none'")
        if self.crl_file is not None and self.client_auth == "none":
            raise ValueError("crl_file needs client_auth 'optional' or 'required'")
        return self


class Listener(Model):
    host: str = "127.0.0.1"  # the address to bind; 0.0.0.0 or :: for every interface
    port: int = Field(ge=0, le=65535)
    tls: TLSSettings | None = None  # HTTPS; without it the listener speaks plain HTTP


class Listeners(Model):
    proxy: Listener = Listener(port=8080)
    admin: Listener = Listener(port=9090)
    # Peers whose X-Forwarded-* headers are believed; everyone else's are replaced.
    trusted_proxies: list[str] = []
    # Proxy processes sharing the proxy port (SO_REUSEPORT); one per core. See workers.py.
    workers: int = Field(default=1, ge=1, le=64)
    # On SIGTERM: how long in-flight requests get to finish once the proxy listener stops accepting
    # (then they are cut); the audit spool drains after (audit.spool.shutdown_drain_seconds).
    shutdown_grace_seconds: float = Field(default=20.0, gt=0, le=3600)
    # deadlines and sizes a client must keep to, on both listeners (settings/limits.py)
    limits: ListenerLimits = ListenerLimits()

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    @model_validator(mode="after")
    def _workers_need_a_port(self) -> "Listeners":
        if self.workers > 1 and self.proxy.port == 0:
            raise ValueError("workers > 1 needs a fixed listeners.proxy.port (not 0)")
        return self


class ForwardAuthSettings(Model):
    """`/.iam/auth` for nginx auth_request, Traefik forwardAuth and Caddy forward_auth (deployment.md)."""

    # The front proxies that may ask (CIDRs); everyone else gets 404, and only their X-Original-* and
    # X-Forwarded-* description of the request is believed. Empty: forward-auth is off.
    trusted_peers: list[str] = []
    # true: a forward-auth deployment; the proxy listener answers /.iam/ and forwards nothing.
    only: bool = False

    _cidrs = field_validator("trusted_peers")(lambda cls, value: Listeners._cidrs(value))

    @model_validator(mode="after")
    def _only_needs_peers(self) -> "ForwardAuthSettings":
        if self.only and not self.trusted_peers:
            raise ValueError("only: forward-auth only needs trusted_peers (the front proxies that ask)")
        return self


class ExtAuthzSettings(Model):
    """Envoy external authorization (docs/envoy.md): the gRPC `Authorization/Check` service and
    Envoy's HTTP mode, each on a listener of its own; either, both, or neither (the default)."""

    grpc: Listener | None = None
    http: Listener | None = None
    # The Envoys that may ask (CIDRs): an allowed answer carries a signed identity, so nobody else
    # gets one. Required when a listener is set.
    trusted_peers: list[str] = []
    # HTTP mode: Envoy's http_service.path_prefix, removed from each check's path.
    path_prefix: str = ""

    _cidrs = field_validator("trusted_peers")(lambda cls, value: Listeners._cidrs(value))

    @model_validator(mode="after")
    def _consistent(self) -> "ExtAuthzSettings":
        if (self.grpc or self.http) and not self.trusted_peers:
            raise ValueError("trusted_peers: ext_authz needs the Envoys that may ask (CIDRs)")
        if self.path_prefix and (not self.path_prefix.startswith("/") or self.path_prefix.endswith("/")):
            raise ValueError("path_prefix: must start with '/' and not end with '/' (or be empty)")
        tls = self.grpc.tls if self.grpc is not None else None
        if tls is not None and (tls.crl_file is not None or tls.client_auth == "optional"):
            raise ValueError("grpc.tls: the gRPC listener takes client_auth 'none' or 'required', without crl_file")
        return self


class WebSocketSettings(Model):
    """Proxied websockets (iam_proxy/websocket.py; docs/configuration.md, "Websockets")."""

    # An open socket is decided again this often, so a revoked session or key, or a policy that no
    # longer allows it, closes it (code 1008); the identity's own expiry closes it on time.
    recheck_seconds: float = Field(default=30, gt=0, le=3600)
