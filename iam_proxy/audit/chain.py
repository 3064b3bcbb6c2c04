"""Tamper evidence for audit files: a hash chain over every line, and signed checkpoints.

Each line is a JSON object carrying `chain: {"seq": n, "prev": hex}` where `prev` is the SHA-256 of
the previous line's bytes (without its newline). Changing, inserting or deleting a line breaks the
link to the next one. Someone who can rewrite the file could recompute the whole chain, so every
`checkpoint_every_events` events (and at the latest `checkpoint_interval_seconds` after the last
one, and at shutdown) a checkpoint line signs the chain head with a key the writer holds:

    {"checkpoint": {"time": ..., "alg": "hmac-sha256"|"ed25519", "key_id": ..., "sig": b64},
     "chain": {"seq": n, "prev": hex}}

`verify_files` walks one file or a rotated series in order and reports the first break.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .config import ChainSettings

GENESIS = "0" * 64


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _signed_bytes(chain: dict[str, Any], checkpoint: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in checkpoint.items() if k != "sig"}
    return b"iam-proxy-audit-checkpoint\n" + orjson.dumps({"chain": chain, "checkpoint": unsigned},
                                                           option=orjson.OPT_SORT_KEYS)


class CheckpointSigner:
    def __init__(self, settings: ChainSettings) -> None:
        self.algorithm = settings.algorithm
        self.key_id = settings.key_id
        self._hmac = settings.hmac_key.get_secret_value().encode() if settings.hmac_key else None
        self._ed25519: Ed25519PrivateKey | None = None
        if settings.ed25519_private_key_file is not None:
            key = serialization.load_pem_private_key(settings.ed25519_private_key_file.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("ed25519_private_key_file: not an Ed25519 private key")
            self._ed25519 = key

    def sign(self, chain: dict[str, Any], checkpoint: dict[str, Any]) -> str:
        data = _signed_bytes(chain, checkpoint)
        if self._ed25519 is not None:
            return base64.b64encode(self._ed25519.sign(data)).decode()
        if self._hmac is None:
            raise RuntimeError("checkpoint signer without a key")
        return base64.b64encode(hmac.new(self._hmac, data, hashlib.sha256).digest()).decode()


class ChainState:
    """The writer's side: stamps lines and says when a checkpoint is due."""

    def __init__(self, settings: ChainSettings, seq: int = 0, prev: str = GENESIS) -> None:
        self.settings = settings
        self.seq, self.prev = seq, prev
        self.signer = CheckpointSigner(settings) if settings.algorithm else None
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    def stamp(self, document: dict[str, Any], encode) -> bytes:
        """`document` with its chain link, encoded; the chain advances past it."""
        self.seq += 1
        line = encode({**document, "chain": {"seq": self.seq, "prev": self.prev}})
        self.prev = line_hash(line)
        if "checkpoint" not in document:
            self._since_checkpoint += 1
        return line

    def checkpoint_due(self) -> bool:
        if self.signer is None or self._since_checkpoint == 0:
            return False
        return (self._since_checkpoint >= self.settings.checkpoint_every_events
                or time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval_seconds)

    def checkpoint_due_at_close(self) -> bool:
        return self.signer is not None and self._since_checkpoint > 0

    def checkpoint(self, encode) -> bytes:
        if self.signer is None:
            raise RuntimeError("no checkpoint key configured")
        chain = {"seq": self.seq + 1, "prev": self.prev}
        body: dict[str, Any] = {"time": time.time(), "alg": self.signer.algorithm, "key_id": self.signer.key_id,
                                "events": self._since_checkpoint}
        body["sig"] = self.signer.sign(chain, body)
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        return self.stamp({"checkpoint": body}, encode)


def last_link(path: Path) -> tuple[int, str] | None:
    """(seq, hash) of the last complete chained line of `path`, to resume the chain after a restart."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            start = max(0, size - 1024 * 1024)
            f.seek(start)
            tail = f.read()
    except FileNotFoundError:
        return None
    for line in reversed(tail.split(b"\n")):
        if not line.strip():
            continue
        try:
            seq = orjson.loads(line)["chain"]["seq"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        return int(seq), line_hash(line)
    return None


# ---------------------------------------------------------------- verification


@dataclass
class VerifyReport:
    lines: int = 0
    events: int = 0
    checkpoints: int = 0
    verified_checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    events_after_last_checkpoint: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


class CheckpointVerifier:
    def __init__(self, hmac_key: bytes | None = None, public_key: Ed25519PublicKey | None = None) -> None:
        self.hmac_key, self.public_key = hmac_key, public_key

    @property
    def has_key(self) -> bool:
        return self.hmac_key is not None or self.public_key is not None

    def check(self, chain: dict[str, Any], checkpoint: dict[str, Any]) -> bool:
        try:
            sig = base64.b64decode(checkpoint.get("sig", ""), validate=True)
        except ValueError:
            return False
        data = _signed_bytes(chain, checkpoint)
        if checkpoint.get("alg") == "hmac-sha256" and self.hmac_key is not None:
            return hmac.compare_digest(sig, hmac.new(self.hmac_key, data, hashlib.sha256).digest())
        if checkpoint.get("alg") == "ed25519" and self.public_key is not None:
            try:
                self.public_key.verify(sig, data)
                return True
            except InvalidSignature:
                return False
        return False


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key (PEM), or the public half of a private key file."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 key")
        return private.public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def verify_files(paths: list[Path], verifier: CheckpointVerifier) -> VerifyReport:
    """Walk the files in order; stop at the first break (everything after it is suspect anyway)."""
    report = VerifyReport()
    prev_seq: int | None = None
    prev_hash: str | None = None
    prev_where = ""
    for path in paths:
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                where = f"{path}:{number}"
                if not raw.endswith(b"\n"):
                    report.problems.append(f"{where}: truncated line (no newline): the last event was cut")
                    return report
                line = raw[:-1]
                if not line.strip():
                    report.problems.append(f"{where}: inserted blank line")
                    return report
                report.lines += 1
                try:
                    record = orjson.loads(line)
                    chain = record["chain"]
                    seq, prev = int(chain["seq"]), str(chain["prev"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    report.problems.append(f"{where}: not a chained audit record: inserted or modified")
                    return report
                if prev_seq is not None:
                    if seq > prev_seq + 1:
                        missing = f"seq {prev_seq + 1}" if seq == prev_seq + 2 else f"seq {prev_seq + 1}..{seq - 1}"
                        report.problems.append(f"{where}: {seq - prev_seq - 1} event(s) deleted before this line "
                                               f"({missing}, after {prev_where})")
                        return report
                    if seq <= prev_seq:
                        report.problems.append(f"{where}: inserted event (seq {seq} repeats or goes back; "
                                               f"previous line has seq {prev_seq})")
                        return report
                    if prev != prev_hash:
                        report.problems.append(f"{prev_where}: modified event (seq {prev_seq}): its hash does "
                                               f"not match the link in the next line")
                        return report
                elif paths and number == 1 and seq != 1:
                    report.warnings.append(f"{where}: the chain starts at seq {seq}; pass the earlier "
                                           "rotated files first to check the links before it")
                if "checkpoint" in record:
                    report.checkpoints += 1
                    if not verifier.has_key:
                        report.problems.append(f"{where}: checkpoint found but no key given to verify it "
                                               "(--hmac-key-env or --public-key)")
                        return report
                    if not verifier.check(chain, record["checkpoint"]):
                        report.problems.append(f"{where}: checkpoint signature does not verify (seq {seq})")
                        return report
                    report.verified_checkpoints += 1
                    report.events_after_last_checkpoint = 0
                else:
                    report.events += 1
                    report.events_after_last_checkpoint += 1
                prev_seq, prev_hash, prev_where = seq, line_hash(line), where
    if report.checkpoints and report.events_after_last_checkpoint:
        report.warnings.append(f"{report.events_after_last_checkpoint} event(s) after the last checkpoint are "
                               "chained but not yet covered by a signature")
    return report
