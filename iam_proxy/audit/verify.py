"""`iam-proxy audit verify`: check the hash chains and signed checkpoints of audit files.

Files are grouped into chains by name: `audit.jsonl` and its rotated copies `audit.jsonl.<UTC time>`
are one chain, in time order; with several workers, each worker's file (`audit.w1.jsonl`, ...) is a
chain of its own (see chain.py). Each chain is walked from its oldest file and stops at its first
break: a modified, inserted or deleted event, or a checkpoint whose signature does not verify.

Three verdicts, so that a missing key is never mistaken for tampering:
    TAMPERED    a chain is broken or a signature does not verify with the key given (exit 1)
    UNVERIFIED  the chains are intact, but checkpoints were signed with a key that was not given (exit 2)
    OK          intact, and every checkpoint verified; or intact and nothing was signed (said so) (exit 0)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .chain import line_hash, signed_bytes

_ROTATED = re.compile(r"^(?P<base>.+)\.(?P<stamp>\d{8}T\d{6}\d*Z)$")


@dataclass
class VerifyReport:
    files: int = 0
    chains: int = 0
    events: int = 0
    checkpoints: int = 0
    verified_checkpoints: int = 0
    unverified: list[str] = field(default_factory=list)  # checkpoints whose key was not given
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "TAMPERED" if self.problems else "UNVERIFIED" if self.unverified else "OK"

    @property
    def exit_code(self) -> int:
        return {"TAMPERED": 1, "UNVERIFIED": 2, "OK": 0}[self.verdict]


class CheckpointVerifier:
    def __init__(self, hmac_key: bytes | None = None, public_key: Ed25519PublicKey | None = None) -> None:
        self.hmac_key, self.public_key = hmac_key, public_key

    def has_key_for(self, algorithm: str | None) -> bool:
        return {"hmac-sha256": self.hmac_key, "ed25519": self.public_key}.get(algorithm or "") is not None

    def check(self, chain: dict[str, Any], checkpoint: dict[str, Any]) -> bool:
        try:
            sig = base64.b64decode(checkpoint.get("sig", ""), validate=True)
        except ValueError:
            return False
        data = signed_bytes(chain, checkpoint)
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


def chains_of(paths: list[Path]) -> list[list[Path]]:
    """The files grouped by chain (a file and its rotated copies), each oldest first."""
    groups: dict[Path, list[tuple[str, Path]]] = {}
    for path in dict.fromkeys(paths):
        rotated = _ROTATED.match(path.name)
        base = path.with_name(rotated["base"]) if rotated else path
        # the live file sorts after every rotated copy ("~" > any digit)
        groups.setdefault(base, []).append((rotated["stamp"] if rotated else "~", path))
    return [[p for _, p in sorted(group)] for group in groups.values()]


def verify_files(paths: list[Path], verifier: CheckpointVerifier) -> VerifyReport:
    report = VerifyReport(files=len(set(paths)))
    for chain in chains_of(paths):
        report.chains += 1
        _verify_chain(chain, verifier, report)
    if report.checkpoints == 0 and report.events and not report.problems:
        report.warnings.append("nothing was signed: the files hold no checkpoint (configure chain.algorithm "
                               "and a key), so the chain shows changes but not a file rewritten as a whole")
    return report


def _verify_chain(paths: list[Path], verifier: CheckpointVerifier, report: VerifyReport) -> None:
    """Walk one chain; stop at the first break (everything after it is suspect anyway)."""
    prev_seq: int | None = None
    prev_hash = prev_where = ""
    from_genesis = False
    events = unsigned = checkpoints = 0
    for path in paths:
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                where = f"{path}:{number}"
                problem = _line_problem(raw)
                if problem is not None:
                    report.problems.append(f"{where}: {problem}")
                    return
                record = orjson.loads(raw)
                chain = record["chain"]
                seq = int(chain["seq"])
                broken = _link_problem(seq, str(chain["prev"]), prev_seq, prev_hash, prev_where)
                if broken is not None:
                    report.problems.append("{}: {}".format(*broken) if broken[0] else f"{where}: {broken[1]}")
                    return
                if prev_seq is None:
                    from_genesis = seq == 1
                    if not from_genesis:
                        report.warnings.append(f"{where}: the chain starts at seq {seq}; pass the earlier "
                                               "rotated files too to check the links before it")
                if "checkpoint" in record:
                    checkpoints += 1
                    if not _check_checkpoint(where, seq, chain, record["checkpoint"], verifier, report):
                        return
                    if from_genesis and record["checkpoint"].get("events", events) != events:
                        report.warnings.append(f"{where}: the checkpoint counts {record['checkpoint'].get('events')} "
                                               f"events, the chain has {events} (written by an older version?)")
                    unsigned = 0
                else:
                    events += 1
                    unsigned += 1
                prev_seq, prev_hash, prev_where = seq, line_hash(raw[:-1]), where
    report.events += events
    if unsigned and checkpoints:
        report.warnings.append(f"{paths[-1]}: {unsigned} event(s) after the last checkpoint are chained but "
                               "not yet covered by a signature")


def _line_problem(raw: bytes) -> str | None:
    if not raw.endswith(b"\n"):
        return "truncated line (no newline): the last event was cut"
    if not raw.strip():
        return "inserted blank line"
    try:
        record = orjson.loads(raw)
        int(record["chain"]["seq"]), str(record["chain"]["prev"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return "not a chained audit record: inserted or modified"
    return None


def _link_problem(seq: int, prev: str, prev_seq: int | None, prev_hash: str,
                  prev_where: str) -> tuple[str, str] | None:
    """(where, what) when this line does not follow the previous one; where "" means this line."""
    if prev_seq is None:
        return None
    if seq > prev_seq + 1:
        missing = f"seq {prev_seq + 1}" if seq == prev_seq + 2 else f"seq {prev_seq + 1}..{seq - 1}"
        return "", f"{seq - prev_seq - 1} event(s) deleted before this line ({missing}, after {prev_where})"
    if seq <= prev_seq:
        return "", f"inserted event (seq {seq} repeats or goes back; previous line has seq {prev_seq})"
    if prev != prev_hash:
        return prev_where, f"modified event (seq {prev_seq}): its hash does not match the link in the next line"
    return None


def _check_checkpoint(where: str, seq: int, chain: dict[str, Any], checkpoint: dict[str, Any],
                      verifier: CheckpointVerifier, report: VerifyReport) -> bool:
    """False when the chain must not be walked further (a signature that does not verify)."""
    report.checkpoints += 1
    algorithm, key_id = checkpoint.get("alg"), checkpoint.get("key_id")
    if not verifier.has_key_for(algorithm):
        option = "--public-key" if algorithm == "ed25519" else "--hmac-key-env"
        report.unverified.append(f"{where}: checkpoint (seq {seq}) is signed with {algorithm} key {key_id!r}, "
                                 f"and no such key was given ({option})")
        return True
    if not verifier.check(chain, checkpoint):
        report.problems.append(f"{where}: checkpoint signature does not verify (seq {seq}, key {key_id!r}): "
                               "the events before it were changed, or the key given is not the one that signed")
        return False
    report.verified_checkpoints += 1
    return True
