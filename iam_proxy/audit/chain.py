"""Tamper evidence for audit files, the writer's side: a hash chain over every line, and signed
checkpoints. (verify.py checks them: `iam-proxy audit verify`.)

Each line is a JSON object carrying `chain: {"seq": n, "prev": hex}` where `prev` is the SHA-256 of
the previous line's bytes (without its newline). Changing, inserting or deleting a line breaks the
link to the next one. Someone who can rewrite the file could recompute the whole chain, so every
`checkpoint_every_events` events (and at the latest `checkpoint_interval_seconds` after the last
one, and at shutdown) a checkpoint line signs the chain head with a key the writer holds:

    {"checkpoint": {"time": ..., "alg": "hmac-sha256"|"ed25519", "key_id": ..., "events": n, "sig": b64},
     "chain": {"seq": n, "prev": hex}}

`events` is the number of events in the chain up to that checkpoint, since the chain began (across
rotations and restarts): what a SIEM that received the same events should have counted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..settings.audit import ChainSettings

GENESIS = "0" * 64
_TAIL_CHUNK = 1024 * 1024


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def signed_bytes(chain: dict[str, Any], checkpoint: dict[str, Any]) -> bytes:
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
        data = signed_bytes(chain, checkpoint)
        if self._ed25519 is not None:
            return base64.b64encode(self._ed25519.sign(data)).decode()
        if self._hmac is None:
            raise RuntimeError("checkpoint signer without a key")
        return base64.b64encode(hmac.new(self._hmac, data, hashlib.sha256).digest()).decode()


@dataclass(frozen=True)
class ChainHead:
    """Where a chain ends: the last line's seq and hash, and how many events the chain holds."""

    seq: int = 0
    prev: str = GENESIS
    events: int = 0


class ChainState:
    """The writer's side: stamps lines and says when a checkpoint is due."""

    def __init__(self, settings: ChainSettings, head: ChainHead = ChainHead()) -> None:
        self.settings = settings
        self.head = head
        self.signer = CheckpointSigner(settings) if settings.algorithm else None
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    def stamp(self, document: dict[str, Any], encode) -> bytes:
        """`document` with its chain link, encoded; the chain advances past it."""
        line = encode({**document, "chain": self._link()})
        return self._advance(line, is_event="checkpoint" not in document)

    def stamp_encoded(self, event: bytes) -> bytes:
        """An event already encoded as a JSON object (without a `chain`), with its chain link added to
        the end: the bytes `stamp` would give, without encoding the event again."""
        link = b'"chain":' + orjson.dumps(self._link()) + b"}"
        return self._advance(event[:-1] + (b"," if event != b"{}" else b"") + link, is_event=True)

    def _link(self) -> dict[str, Any]:
        return {"seq": self.head.seq + 1, "prev": self.head.prev}

    def _advance(self, line: bytes, is_event: bool) -> bytes:
        self.head = ChainHead(self.head.seq + 1, line_hash(line), self.head.events + is_event)
        self._since_checkpoint += is_event
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
        chain = {"seq": self.head.seq + 1, "prev": self.head.prev}
        body: dict[str, Any] = {"time": time.time(), "alg": self.signer.algorithm, "key_id": self.signer.key_id,
                                "events": self.head.events}
        body["sig"] = self.signer.sign(chain, body)
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        return self.stamp({"checkpoint": body}, encode)

    def snapshot(self) -> tuple[ChainHead, int]:
        return self.head, self._since_checkpoint

    def restore(self, snapshot: tuple[ChainHead, int]) -> None:
        """Undo stamps whose lines never reached the file."""
        self.head, self._since_checkpoint = snapshot


def lines_backward(path: Path) -> Iterator[bytes]:
    """The complete lines of `path`, last first (a trailing partial line is skipped)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        end = os.fstat(fd).st_size
        carry = b""
        skip_partial = True
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            block = os.pread(fd, end - start, start) + carry
            end = start
            parts = block.split(b"\n")
            if skip_partial:  # what follows the last newline is not a complete line
                parts[-1] = b""
                skip_partial = False
            carry = parts[0] if start > 0 else b""
            for line in reversed(parts[1:] if start > 0 else parts):
                if line:
                    yield line
    finally:
        os.close(fd)


def chain_head(files: list[Path], count_events: bool) -> ChainHead:
    """Where the chain written to `files` (oldest first) ends. With `count_events`, it also counts
    the chain's events: from the last checkpoint (which carries the count), or from the start."""
    last: tuple[int, str] | None = None
    after = 0  # event lines after the last checkpoint
    for path in reversed(files):
        for line in lines_backward(path):
            try:
                record = orjson.loads(line)
                seq = int(record["chain"]["seq"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise ValueError(f"{path}: its last lines are not chained audit records; "
                                 "move the file away to start a new chain") from None
            if last is None:
                last = (seq, line_hash(line))
                if not count_events:
                    return ChainHead(*last)
            if "checkpoint" in record:
                return ChainHead(*last, events=int(record["checkpoint"].get("events", 0)) + after)
            after += 1
            if seq == 1:
                return ChainHead(*last, events=after)
    return replace(ChainHead(*last), events=after) if last else ChainHead()
