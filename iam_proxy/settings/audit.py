"""Audit settings: sinks (file, stdout, syslog, HTTP collectors), the durable spool, hash chain,
per-sink privacy rules (the `audit:` section)."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, SecretStr, field_validator, model_validator

from .base import Model
from .validators import http_url


Format = Literal["native", "ecs", "cef", "ocsf"]
FsyncPolicy = Literal["never", "always", "interval"]

# Names of identity-derived values that a privacy rule may use instead of dotted paths; each one
# covers every place the native event carries that value (see privacy.FIELD_ALIASES).
PRIVACY_ALIASES = ("email", "username", "subject", "name", "client_ip", "groups")


class FieldRule(Model):
    """What to do with one field: `drop` it, `mask` it ("***"), `pseudonymize` it (keyed HMAC,
    stable for a given key), or `encrypt` it (AES-GCM, readable with the key)."""

    field: str  # an alias (email, username, subject, name, client_ip, groups) or a dotted path
    action: Literal["drop", "mask", "pseudonymize", "encrypt"]

    @field_validator("field")
    @classmethod
    def _path(cls, value: str) -> str:
        if value not in PRIVACY_ALIASES and not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", value):
            raise ValueError(f"must be one of {', '.join(PRIVACY_ALIASES)} or a dotted path like identity.email")
        return value


class PrivacySettings(Model):
    rules: list[FieldRule] = []
    pseudonym_key: SecretStr | None = None  # HMAC-SHA256 key; same key, same pseudonym
    encryption_key: SecretStr | None = None  # base64 of a 16, 24 or 32 byte AES key
    # The masked policy input repeats identity values (headers, path, identity); by default a sink
    # with privacy rules does not get it. Set true to keep it anyway.
    include_input: bool | None = None

    @model_validator(mode="after")
    def _keys(self) -> "PrivacySettings":
        actions = {rule.action for rule in self.rules}
        if "pseudonymize" in actions and self.pseudonym_key is None:
            raise ValueError("pseudonym_key is required by a pseudonymize rule")
        if "encrypt" in actions:
            if self.encryption_key is None:
                raise ValueError("encryption_key is required by an encrypt rule")
            try:
                key = base64.b64decode(self.encryption_key.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("encryption_key: not base64") from None
            if len(key) not in (16, 24, 32):
                raise ValueError("encryption_key: must decode to 16, 24 or 32 bytes")
        return self

    @property
    def keeps_input(self) -> bool:
        return self.include_input if self.include_input is not None else not self.rules


class RetrySettings(Model):
    """Exponential backoff between attempts: initial * 2^n, capped, with +-jitter (a fraction)."""

    initial_backoff_seconds: float = Field(default=0.2, gt=0)
    max_backoff_seconds: float = Field(default=30.0, gt=0)
    jitter: float = Field(default=0.3, ge=0, le=1)


class ChainSettings(Model):
    """Tamper evidence for the file sink: every line carries `chain.seq` and `chain.prev` (SHA-256
    of the previous line); checkpoints signed with `hmac_key` or `ed25519_private_key_file`."""

    enabled: bool = True
    algorithm: Literal["hmac-sha256", "ed25519"] | None = None  # None: a chain without checkpoints
    hmac_key: SecretStr | None = None
    ed25519_private_key_file: Path | None = None  # PEM (PKCS#8)
    key_id: str = "default"
    checkpoint_every_events: int = Field(default=1000, ge=1)
    checkpoint_interval_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _key(self) -> "ChainSettings":
        if self.algorithm == "hmac-sha256" and (self.hmac_key is None or self.ed25519_private_key_file):
            raise ValueError("algorithm hmac-sha256 needs hmac_key (and no ed25519_private_key_file)")
        if self.algorithm == "ed25519" and (self.ed25519_private_key_file is None or self.hmac_key):
            raise ValueError("algorithm ed25519 needs ed25519_private_key_file (and no hmac_key)")
        if self.algorithm is None and (self.hmac_key is not None or self.ed25519_private_key_file):
            raise ValueError("a checkpoint key needs algorithm (hmac-sha256 or ed25519)")
        if self.algorithm is not None and not self.enabled:
            raise ValueError("checkpoints need enabled: true")
        return self


class _SinkBase(Model):
    # Names label metrics and key the spool cursors: give each sink a stable name.
    name: str | None = None
    format: Format = "native"
    privacy: PrivacySettings = PrivacySettings()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", value):
            raise ValueError("letters, digits, '_' and '-' only (at most 64)")
        return value


class FileSink(_SinkBase):
    """JSON lines (or CEF lines) appended to a local file, written before the response ends."""

    type: Literal["file"]
    path: Path
    fsync: FsyncPolicy | bool = "never"  # true = always, false = never
    fsync_interval_seconds: float = Field(default=1.0, gt=0)
    rotate_bytes: int | None = Field(default=None, ge=4096)
    rotate_interval_seconds: float | None = Field(default=None, gt=0)
    chain: ChainSettings = ChainSettings()

    @field_validator("fsync")
    @classmethod
    def _fsync(cls, value: FsyncPolicy | bool) -> FsyncPolicy:
        if value is True:
            return "always"
        if value is False:
            return "never"
        return value

    @model_validator(mode="after")
    def _chain_needs_json(self) -> "FileSink":
        if self.format == "cef" and self.chain.enabled:
            raise ValueError("chain: the hash chain needs a JSON format; set chain.enabled: false for cef")
        return self


class StdoutSink(_SinkBase):
    type: Literal["stdout"]


class ClientTLSSettings(Model):
    ca_file: Path | None = None  # the collector's CA; the system store when absent
    cert_file: Path | None = None  # client certificate, for collectors that ask for one
    key_file: Path | None = None
    server_name: str | None = None  # the name to check in the collector's certificate

    @model_validator(mode="after")
    def _pair(self) -> "ClientTLSSettings":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        return self


class _DeliveredSink(_SinkBase):
    """A sink fed from the spool by its own delivery task, off the request path."""

    batch_max_events: int = Field(default=500, ge=1, le=50_000)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    retry: RetrySettings = RetrySettings()


class SyslogSink(_DeliveredSink):
    """RFC 5424 messages over TCP with octet counting (RFC 6587), TLS (RFC 5425) or UDP (RFC 5426)."""

    type: Literal["syslog"]
    host: str
    port: int = Field(ge=1, le=65535)
    transport: Literal["tcp", "tls", "udp"] = "tcp"
    tls: ClientTLSSettings | None = None
    facility: int = Field(default=13, ge=0, le=23)  # 13 = log audit
    app_name: str = "iam-proxy"
    msgid: str = "audit"
    hostname: str | None = None  # the proxy's host name when absent
    # Plain syslog has no acknowledgement: a batch counts as delivered once the connection is
    # still up this long after it was written (a collector that went away shows up as EOF/RST).
    confirm_seconds: float = Field(default=0.05, ge=0, le=5)
    max_message_bytes: int = Field(default=65536, ge=480)

    @model_validator(mode="after")
    def _tls(self) -> "SyslogSink":
        if self.tls is not None and self.transport != "tls":
            raise ValueError("tls settings need transport: tls")
        for field_name in ("app_name", "msgid", "hostname"):
            value = getattr(self, field_name)
            if value is not None and not re.fullmatch(r"[!-~]{1,48}", value):
                raise ValueError(f"{field_name}: printable ASCII without spaces, at most 48 characters")
        return self


class HttpSink(_DeliveredSink):
    """Splunk HEC (`/services/collector/event`), Elasticsearch/OpenSearch `_bulk`, or a webhook
    receiving a JSON array."""

    type: Literal["http"]
    kind: Literal["splunk_hec", "elastic_bulk", "webhook"]
    url: str  # HEC: base URL or full endpoint; bulk: cluster URL or .../_bulk; webhook: the URL
    token: SecretStr | None = None  # HEC: `Authorization: Splunk <token>`; webhook: Bearer
    api_key: SecretStr | None = None  # Elastic: `Authorization: ApiKey <api_key>`
    username: str | None = None  # Basic authentication (Elastic/OpenSearch)
    password: SecretStr | None = None
    headers: dict[str, str] = {}
    gzip: bool = True
    index: str | None = None  # HEC index (optional), bulk index (default iam-proxy-audit)
    source: str = "iam-proxy"
    sourcetype: str = "iam-proxy:audit"
    tls: ClientTLSSettings | None = None

    _http_url = field_validator("url")(http_url)

    @model_validator(mode="after")
    def _auth(self) -> "HttpSink":
        if self.kind == "splunk_hec" and self.token is None:
            raise ValueError("splunk_hec needs token")
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither")
        for name in self.headers:
            if name.lower() in ("authorization", "content-encoding", "content-type"):
                raise ValueError(f"headers.{name}: set by the sink itself")
        return self


class SpoolSettings(Model):
    """The on-disk spool in front of the syslog and HTTP sinks (at-least-once delivery)."""

    dir: Path
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=16 * 1024)
    segment_bytes: int = Field(default=4 * 1024 * 1024, ge=4 * 1024)
    fsync: FsyncPolicy = "interval"
    fsync_interval_seconds: float = Field(default=1.0, gt=0)
    # When the spool is full: `block` answers new requests 503 audit_unavailable until a sink
    # catches up (nothing is lost); `drop_oldest` deletes the oldest undelivered events (counted
    # and logged) so requests keep flowing.
    overflow: Literal["block", "drop_oldest"] = "block"
    shutdown_drain_seconds: float = Field(default=3.0, ge=0, le=60)

    @model_validator(mode="after")
    def _sizes(self) -> "SpoolSettings":
        if self.segment_bytes * 2 > self.max_bytes:
            raise ValueError("max_bytes must be at least twice segment_bytes")
        return self


AuditSinkSettings = Annotated[Union[FileSink, StdoutSink, SyslogSink, HttpSink], Field(discriminator="type")]
DELIVERED_SINKS = (SyslogSink, HttpSink)


class AuditSettings(Model):
    sinks: list[AuditSinkSettings] = [StdoutSink(type="stdout")]
    include_input: bool = True
    spool: SpoolSettings | None = None
    # A request whose event cannot be built or recorded: `deny` refuses it (503 audit_unavailable,
    # or an aborted response when its head has already left); `allow` answers it anyway. Both are
    # logged and counted.
    on_failure: Literal["deny", "allow"] = "deny"

    @model_validator(mode="after")
    def _sinks(self) -> "AuditSettings":
        seen: set[str] = set()
        for i, sink in enumerate(self.sinks):
            name = sink_name(sink, i)
            if name in seen:
                raise ValueError(f"audit.sinks[{i}].name: duplicate {name!r}")
            seen.add(name)
            if isinstance(sink, DELIVERED_SINKS) and self.spool is None:
                raise ValueError(f"audit.sinks[{i}]: a {sink.type} sink needs audit.spool.dir "
                                 "(events are spooled to disk before delivery)")
        return self

    def durable_paths(self) -> list[Path]:
        """Where the audit trail is written: the spool directory and every file sink's file."""
        paths = [s.path for s in self.sinks if isinstance(s, FileSink)]
        return paths + ([self.spool.dir] if self.spool is not None else [])

    def relocated(self, directory: Path) -> "AuditSettings":
        """The same sinks and spool, their files under `directory`: `iam-proxy check` builds the
        audit pipeline there, because a running proxy's spool is recovered only by that proxy."""
        sinks = [s.model_copy(update={"path": directory / f"{sink_name(s, i)}.log"}) if isinstance(s, FileSink)
                 else s for i, s in enumerate(self.sinks)]
        spool = self.spool.model_copy(update={"dir": directory / "spool"}) if self.spool is not None else None
        return self.model_copy(update={"sinks": sinks, "spool": spool})


def sink_name(sink: _SinkBase, index: int) -> str:
    return sink.name or f"{sink.type}{index}"  # type: ignore[attr-defined]
