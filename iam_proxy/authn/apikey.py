"""API keys: long random secrets for machine clients, kept in a key file as HMAC-SHA256 digests only.

A key looks like `iak_<id>_<secret>`: the 12-hex-digit id finds the record, and the digest
HMAC-SHA256(pepper, whole key) is compared in constant time. The pepper lives in the proxy's config
(an environment variable), not in the key file, so a leaked key file alone verifies nothing. The file
also records a pepper fingerprint, so a proxy or CLI started with the wrong pepper says so instead of
refusing every key.

The key file is managed by `iam-proxy apikey create|list|revoke` (the plaintext key is printed once, at
creation) and re-read by the proxy when it changes. A file that no longer loads, or whose fingerprint
does not match, refuses every key (503) until it is fixed: a broken revocation must not let a revoked
key back in.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..context import RequestContext
from ..core.errors import AuthUnavailable, ConfigError, InvalidCredential
from ..core.files import WatchedFiles
from ..core.identity import Identity
from ..core.redaction import register_secret_header
from ..settings.authn import ApiKeyAuthenticatorSettings

log = logging.getLogger("iam_proxy.authn.apikey")

KEY_PREFIX = "iak"
_KEY_FORMAT = re.compile(r"^iak_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DIGEST_SCHEME = "hmac-sha256:"
_FILE_VERSION = 1
_HEADER_COMMENT = ("# Managed by `iam-proxy apikey`. Holds HMAC-SHA256 digests of API keys, never the keys.\n")


# ---------------------------------------------------------------- keys and digests


def generate_key() -> tuple[str, str]:
    """A new (key id, plaintext key); 256 bits of secret."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def digest(pepper: str, key: str) -> str:
    return _DIGEST_SCHEME + hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def pepper_fingerprint(pepper: str) -> str:
    """Identifies the pepper without revealing it (an HMAC of a fixed label, truncated)."""
    return hmac.new(pepper.encode(), b"iam-proxy api key pepper", hashlib.sha256).hexdigest()[:16]


def _utc(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, where: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where}: not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def parse_expiry(text: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """`90d`, `12h`, `30m`, an ISO date or time, or `never`."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if text == "never":
        return None
    match = re.fullmatch(r"(\d+)([dhm])", text)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now + dt.timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: amount})
    parsed = _parse_time(text, "--expires")
    if parsed is None or parsed <= now:
        raise ValueError("--expires: must be in the future")
    return parsed


# ---------------------------------------------------------------- the key file


@dataclass(frozen=True)
class KeyRecord:
    id: str
    owner: str
    digest: str
    scopes: tuple[str, ...] = ()
    created_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None

    def status(self, now: dt.datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        def when(value: dt.datetime | None) -> str | None:
            return _utc(value) if value else None
        return {"id": self.id, "owner": self.owner, "scopes": list(self.scopes),
                "created_at": when(self.created_at), "expires_at": when(self.expires_at),
                "revoked_at": when(self.revoked_at), "digest": self.digest}


@dataclass
class KeyFile:
    pepper_id: str
    keys: list[KeyRecord] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> "KeyFile":
        """Parse and check a key file; ValueError names what is wrong (never a digest)."""
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(raw, dict) or raw.get("version") != _FILE_VERSION:
            raise ValueError(f"{path}: not an iam-proxy key file (version {_FILE_VERSION})")
        pepper_id = raw.get("pepper_id")
        if not isinstance(pepper_id, str):
            raise ValueError(f"{path}: pepper_id is missing")
        records, seen = [], set()
        for i, item in enumerate(raw.get("keys") or []):
            where = f"{path}: keys[{i}]"
            if not isinstance(item, dict):
                raise ValueError(f"{where}: must be a mapping")
            key_id, owner, key_digest = item.get("id"), item.get("owner"), item.get("digest")
            if not isinstance(key_id, str) or not re.fullmatch(r"[0-9a-f]{12}", key_id):
                raise ValueError(f"{where}.id: must be 12 hex digits")
            if key_id in seen:
                raise ValueError(f"{where}.id: duplicate {key_id!r}")
            seen.add(key_id)
            if not isinstance(owner, str) or not owner:
                raise ValueError(f"{where}.owner: must be a non-empty string")
            if not isinstance(key_digest, str) or not re.fullmatch(r"hmac-sha256:[0-9a-f]{64}", key_digest):
                raise ValueError(f"{where}.digest: must be hmac-sha256:<64 hex digits>")
            scopes = item.get("scopes") or []
            if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                raise ValueError(f"{where}.scopes: must be a list of strings")
            records.append(KeyRecord(
                id=key_id, owner=owner, digest=key_digest, scopes=tuple(scopes),
                created_at=_parse_time(item.get("created_at"), f"{where}.created_at"),
                expires_at=_parse_time(item.get("expires_at"), f"{where}.expires_at"),
                revoked_at=_parse_time(item.get("revoked_at"), f"{where}.revoked_at"),
            ))
        return cls(pepper_id=pepper_id, keys=records)

    def save(self, path: Path) -> None:
        """Atomically replace the file (mode 0600), so the proxy never reads half a file."""
        body = {"version": _FILE_VERSION, "pepper_id": self.pepper_id, "keys": [k.to_dict() for k in self.keys]}
        text = _HEADER_COMMENT + yaml.safe_dump(body, sort_keys=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def locked_key_file(path: Path, pepper: str | None) -> Iterator[KeyFile]:
    """Load (or, with a pepper, start) the key file under an exclusive lock, yield it, save it after.

    Without a pepper (revocation) the file must exist and its fingerprint is not checked.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            key_file = KeyFile.load(path)
            if pepper is not None and key_file.pepper_id != pepper_fingerprint(pepper):
                raise ValueError(f"{path}: the pepper does not match the one this file was made with")
        elif pepper is not None:
            key_file = KeyFile(pepper_id=pepper_fingerprint(pepper))
        else:
            raise ValueError(f"{path}: no such key file")
        yield key_file
        key_file.save(path)


def create_key(path: Path, pepper: str, owner: str, scopes: list[str],
               expires_at: dt.datetime | None) -> tuple[KeyRecord, str]:
    """Add a key; returns its record and the plaintext key (shown once, stored nowhere)."""
    with locked_key_file(path, pepper) as key_file:
        key_id, key = generate_key()
        while any(k.id == key_id for k in key_file.keys):
            key_id, key = generate_key()
        record = KeyRecord(id=key_id, owner=owner, digest=digest(pepper, key), scopes=tuple(scopes),
                           created_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0),
                           expires_at=expires_at.replace(microsecond=0) if expires_at else None)
        key_file.keys.append(record)
    return record, key


def revoke_key(path: Path, key_id: str) -> KeyRecord:
    with locked_key_file(path, None) as key_file:
        for i, record in enumerate(key_file.keys):
            if record.id == key_id:
                if record.revoked_at is None:
                    record = replace(record, revoked_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
                    key_file.keys[i] = record
                return record
        raise ValueError(f"{path}: no key with id {key_id!r}")


# ---------------------------------------------------------------- the authenticator


class ApiKeyAuthenticator:
    """Accepts `<header>: <key>` (or `<header>: <scheme> <key>` when a scheme is configured)."""

    challenge = None  # API keys have no standard WWW-Authenticate scheme

    def __init__(self, name: str, settings: ApiKeyAuthenticatorSettings, clock=time.time) -> None:
        self.name = name
        self.settings = settings
        self._header = settings.header.lower()
        register_secret_header(self._header)  # audit events and decision logs mask it
        self._pepper = settings.pepper.get_secret_value()
        self._fingerprint = pepper_fingerprint(self._pepper)
        self._clock = clock
        self._keys: dict[str, KeyRecord] | None = None
        self._file = WatchedFiles([settings.file], settings.reload_interval_seconds)
        try:
            self._load()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"authenticators.{name}.file: {exc}") from None

    def _load(self) -> None:
        stamp = self._file.current()
        key_file = KeyFile.load(self.settings.file)
        if key_file.pepper_id != self._fingerprint:
            raise ValueError("the configured pepper does not match the one the key file was made with")
        self._keys = {k.id: k for k in key_file.keys}
        self._file.accept(stamp)

    def _refresh(self) -> dict[str, KeyRecord]:
        if self._file.changed() is not None:
            try:
                self._load()
                log.info("api key file %s reloaded: %d keys", self.settings.file, len(self._keys or {}))
            except (OSError, ValueError) as exc:
                log.error("api key file %s cannot be loaded, refusing every key until it can: %s",
                          self.settings.file, exc)
                self._keys = None
                self._file.accept(None)
        if self._keys is None:
            raise AuthUnavailable("apikey_store_unavailable", message="API keys cannot be checked right now.",
                                  detail=f"key file {self.settings.file} is not loadable")
        return self._keys

    def _presented_key(self, ctx: RequestContext) -> str | None:
        value = ctx.headers.get(self._header)
        if value is None:
            return None
        value = value.strip()
        if self.settings.scheme is not None:
            scheme, _, value = value.partition(" ")
            if scheme.lower() != self.settings.scheme.lower():
                return None
            value = value.strip()
        if not value:
            raise InvalidCredential("apikey_malformed", message="The API key is malformed.")
        return value

    async def authenticate(self, ctx: RequestContext) -> Identity | None:
        key = self._presented_key(ctx)
        if key is None:
            return None
        keys = self._refresh()
        match = _KEY_FORMAT.fullmatch(key)
        if match is None:
            raise InvalidCredential("apikey_malformed", message="The API key is malformed.")
        record = keys.get(match.group(1))
        presented = digest(self._pepper, key)
        # Compare against something even for an unknown id, so both paths cost the same.
        expected = record.digest if record is not None else _DIGEST_SCHEME + "0" * 64
        if not hmac.compare_digest(presented.encode(), expected.encode()) or record is None:
            raise InvalidCredential("apikey_invalid", message="The API key is not valid.")
        now = dt.datetime.fromtimestamp(self._clock(), dt.timezone.utc)
        status = record.status(now)
        if status != "active":
            raise InvalidCredential(f"apikey_{status}", message=f"The API key is {status}.",
                                    detail=f"key {record.id} of {record.owner}")
        ctx.consumed_headers.add(self._header)  # the key is for the proxy, not the upstream
        return Identity(
            sub=record.owner, method="apikey", iss=f"apikey:{self.name}", provider=self.name,
            username=record.owner, scopes=record.scopes,
            expires_at=int(record.expires_at.timestamp()) if record.expires_at else None,
            attributes={"api_key_id": record.id},
        )
