"""Which redacted input values a policy can read.

An audit event lists in `input_redacted` the JSON pointers of the input values it does not show as
the live decision saw them (masked credentials, pseudonymized or dropped identity fields); every
masking writes there (redaction.changed_pointers, audit/privacy.py). Events written before that
field existed are scanned for the masks themselves. A replay whose policy can
read one of them (input_reads.py, conservative) is "cannot replay", never a guess.
"""

from __future__ import annotations

from typing import Any

from ..policy.input_reads import Reads
from ..redaction import MASK, pointer

_MASK_PREFIXES = ("ps:", "enc:")


def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def _looks_masked(value: Any) -> bool:
    return isinstance(value, str) and (value == MASK or value.endswith(" " + MASK) or value.startswith(_MASK_PREFIXES))


def _scan(node: Any, path: tuple[str, ...]) -> list[str]:
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _scan(value, (*path, key))]
    if isinstance(node, list):
        return [pointer(path)] if any(_looks_masked(v) for v in node) else []
    return [pointer(path)] if _looks_masked(node) else []


def redacted_pointers(event: dict[str, Any]) -> list[str]:
    """The event's own list; an event written before there was one is scanned for masks."""
    if "input_redacted" in event:
        return sorted(event["input_redacted"])
    return sorted(_scan(event.get("input"), ("input",)))


def can_read(reads: Reads, json_pointer: str) -> bool:
    """True when a policy reading `reads` can reach the value at `json_pointer` (or anything in it)."""
    if reads is None:
        return True
    node: Any = reads
    for part in [_unescape(p) for p in json_pointer.split("/")[2:]]:  # skip "" and "input"
        if node is True:
            return True
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True  # the policy reads this value, or something inside it


def blocking(reads: Reads, event: dict[str, Any]) -> list[str]:
    """The redacted values this policy reads: non-empty means the event cannot be replayed."""
    return [p for p in redacted_pointers(event) if can_read(reads, p)]
