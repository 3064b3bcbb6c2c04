"""Typed, validated settings: one YAML file, `${ENV}` interpolation, secrets that never print.

`load_settings(path)` returns a frozen `Settings` or raises `ConfigError` naming the exact key path
(`routes[1].upstream: ...`), which the CLI turns into exit code 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- listeners


class TLSSettings(_Model):
    cert_file: Path
    key_file: Path
    min_version: Literal["1.2", "1.3"] = "1.2"
    ciphers: str | None = None


class Listener(_Model):
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    tls: TLSSettings | None = None


class Listeners(_Model):
    proxy: Listener = Listener(port=8080)
    admin: Listener = Listener(port=9090)
    # Peers whose X-Forwarded-* headers are believed; everyone else's are replaced.
    trusted_proxies: list[str] = []

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value


# ---------------------------------------------------------------- identity providers


class ClaimMapping(_Model):
    """Where each Identity field comes from in a token's claims (dotted paths)."""

    sub: str = "sub"
    username: str | None = "preferred_username"
    email: str | None = "email"
    name: str | None = "name"
    groups: list[str] = ["groups"]
    roles: list[str] = ["roles"]
    scopes: list[str] = ["scope", "scp"]
    tenant: str | None = None
    # Identity.attributes gets these claims verbatim (name -> claim path).
    attributes: dict[str, str] = {}


class JWTProvider(_Model):
    id: str
    issuer: str
    discovery: bool = False
    jwks_uri: str | None = None
    jwks_file: Path | None = None
    audiences: list[str] = Field(min_length=1)
    algorithms: list[Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                             "ES256", "ES384", "ES512", "EdDSA"]] = ["RS256"]
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    require_exp: bool = True
    claims: ClaimMapping = ClaimMapping()
    jwks_refresh_seconds: float = Field(default=300, gt=0)
    jwks_min_refetch_seconds: float = Field(default=10, ge=0)
    http_timeout_seconds: float = Field(default=5, gt=0, le=60)

    @model_validator(mode="after")
    def _one_key_source(self) -> "JWTProvider":
        sources = [self.discovery, self.jwks_uri is not None, self.jwks_file is not None]
        if sum(bool(s) for s in sources) != 1:
            raise ValueError("set exactly one of discovery, jwks_uri, jwks_file")
        return self


# ---------------------------------------------------------------- authenticators


class JWTAuthenticatorSettings(_Model):
    type: Literal["jwt"]
    providers: list[str] = Field(min_length=1)
    header: str = "authorization"
    # Token digest -> verified identity, bounded by the token's own exp.
    cache_entries: int = Field(default=10_000, ge=0)


class AnonymousAuthenticatorSettings(_Model):
    type: Literal["anonymous"]
    subject: str = "anonymous"


AuthenticatorSettings = Annotated[
    Union[JWTAuthenticatorSettings, AnonymousAuthenticatorSettings],
    Field(discriminator="type"),
]


# ---------------------------------------------------------------- routes


class RouteMatch(_Model):
    hosts: list[str] = []  # exact names or "*.example.com"; empty = any host
    # A glob over the decoded path: "*" is one segment, "**" any number of segments.
    path: str = "/**"
    methods: list[str] = []  # empty = any method

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @field_validator("methods")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [m.upper() for m in value]


class RoutePolicy(_Model):
    # The decision path, as in OPA: "iam/authz/decision" or "envoy/authz/allow".
    path: str = "iam/authz/decision"
    dry_run: bool = False

    @field_validator("path")
    @classmethod
    def _slashes(cls, value: str) -> str:
        value = value.strip("/").replace(".", "/")
        if value.startswith("data/"):
            value = value[len("data/"):]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*", value):
            raise ValueError("must look like 'package/path/rule'")
        return value


class Route(_Model):
    id: str
    match: RouteMatch = RouteMatch()
    upstream: str
    authenticators: list[str] = Field(min_length=1)
    policy: RoutePolicy = RoutePolicy()
    timeout_seconds: float = Field(default=30, gt=0)
    connect_timeout_seconds: float = Field(default=5, gt=0)
    preserve_host: bool = False
    strip_prefix: str | None = None
    labels: dict[str, str] = {}

    @field_validator("upstream")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


# ---------------------------------------------------------------- policy, headers, audit


class PolicySettings(_Model):
    engine: Literal["embedded"] = "embedded"
    dir: Path = Path("policies")
    reload_interval_seconds: float = Field(default=1.0, ge=0)  # 0 = no reload


class AssertionSettings(_Model):
    header: str = "X-Iam-Assertion"
    key_file: Path | None = None  # PEM, EC P-256; an ephemeral key is made when absent
    issuer: str = "iam-proxy"
    ttl_seconds: int = Field(default=60, ge=5, le=3600)


class IdentityHeaders(_Model):
    user: str = "X-Forwarded-User"
    email: str = "X-Forwarded-Email"
    groups: str = "X-Forwarded-Groups"
    preferred_username: str = "X-Forwarded-Preferred-Username"
    # Extra inbound headers to strip because upstreams might trust them.
    spoofable: list[str] = ["X-Forwarded-Roles", "X-Remote-User", "X-User", "Remote-User"]
    assertion: AssertionSettings = AssertionSettings()


class FileSink(_Model):
    type: Literal["file"]
    path: Path
    fsync: bool = False


class StdoutSink(_Model):
    type: Literal["stdout"]


AuditSinkSettings = Annotated[Union[FileSink, StdoutSink], Field(discriminator="type")]


class AuditSettings(_Model):
    sinks: list[AuditSinkSettings] = [StdoutSink(type="stdout")]
    include_input: bool = True


class Settings(_Model):
    listeners: Listeners = Listeners()
    identity_providers: list[JWTProvider] = []
    authenticators: dict[str, AuthenticatorSettings]
    routes: list[Route] = Field(min_length=1)
    policy: PolicySettings = PolicySettings()
    identity_headers: IdentityHeaders = IdentityHeaders()
    audit: AuditSettings = AuditSettings()
    # Secrets are wrapped so that printing the settings never shows them.
    secrets: dict[str, SecretStr] = {}

    @model_validator(mode="after")
    def _references(self) -> "Settings":
        provider_ids = [p.id for p in self.identity_providers]
        _unique(provider_ids, "identity_providers", "id")
        _unique([r.id for r in self.routes], "routes", "id")
        for name, auth in self.authenticators.items():
            if isinstance(auth, JWTAuthenticatorSettings):
                for i, pid in enumerate(auth.providers):
                    if pid not in provider_ids:
                        raise ValueError(
                            f"authenticators.{name}.providers[{i}]: unknown identity provider {pid!r}"
                        )
        for i, route in enumerate(self.routes):
            for j, auth_name in enumerate(route.authenticators):
                if auth_name not in self.authenticators:
                    raise ValueError(
                        f"routes[{i}].authenticators[{j}]: unknown authenticator {auth_name!r}"
                    )
        return self


def _unique(values: list[str], section: str, key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{section}[{i}].{key}: duplicate {value!r}")
        seen.add(value)


# ---------------------------------------------------------------- loading


def interpolate_env(node: Any, path: str = "", environ: dict[str, str] | None = None) -> Any:
    """Replace `${NAME}` and `${NAME:-default}` in every string; a missing variable is an error."""
    env = os.environ if environ is None else environ
    if isinstance(node, dict):
        return {k: interpolate_env(v, f"{path}.{k}" if path else str(k), env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_env(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if isinstance(node, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set")

        return _ENV_REF.sub(substitute, node)
    return node


def _error_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("jwt", "anonymous", "file", "stdout") and out:
            continue  # discriminated-union tags add noise to the path
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_settings(raw: Any) -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError("<root>: the config must be a mapping")
    raw = interpolate_env(raw)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _error_path(tuple(first["loc"])) or "<root>"
        message = first["msg"].removeprefix("Value error, ")
        if ": " in message and message.split(": ", 1)[0].startswith(("routes", "authenticators", "identity_providers")):
            where, message = message.split(": ", 1)
        raise ConfigError(f"{where}: {message}") from None


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_settings(raw)
