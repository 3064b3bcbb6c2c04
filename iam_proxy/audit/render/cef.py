"""ArcSight Common Event Format (CEF:0), one line per event.

Header fields escape `\\` and `|`; extension values escape `\\`, `=`, CR and LF (as `\\r`, `\\n`).
Every other control character, U+2028/U+2029 and DEL become a visible `\\\\u` and four hex digits (an escaped
backslash, then the code point), so an ANSI escape or a line separator in a username can neither
start a new record nor reach a terminal raw.
"""

from __future__ import annotations

import re
from typing import Any

from ... import __version__
from .common import epoch_ms

VENDOR, PRODUCT = "iam-proxy", "iam-proxy"
_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")

SEVERITY = {"allowed": 3, "denied": 6, "error": 8}


def _visible(match: re.Match[str]) -> str:
    return f"\\\\u{ord(match.group()):04x}"


def escape_header(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    text = text.replace("\r", " ").replace("\n", " ")  # the header has no escape for line breaks
    return _CONTROL.sub(_visible, text)


def escape_extension(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")
    return _CONTROL.sub(_visible, text)


def render(event: dict[str, Any]) -> str:
    identity = event.get("identity") or {}
    http = event.get("http") or {}
    decision = event.get("decision") or {}
    route = event.get("route") or {}
    client = event.get("client") or {}
    outcome = event.get("outcome", "error")
    name = f"{http.get('method', '')} {outcome} {event.get('reason', '')}"
    query = http.get("query")
    extension = {
        "rt": epoch_ms(event.get("timestamp")),  # ArcSight: epoch milliseconds
        "externalId": event.get("decision_id"),
        "requestMethod": http.get("method"),
        "request": http.get("path") + (f"?{query}" if query else "") if http.get("path") else None,
        "requestClientApplication": http.get("user_agent"),
        "dhost": http.get("host"),
        "src": client.get("address"),
        "suser": identity.get("username") or identity.get("sub"),
        "suid": identity.get("sub"),
        "duser": identity.get("email"),
        "outcome": outcome,
        "reason": event.get("reason"),
        "act": "allow" if decision.get("allowed") else "deny",
        "cs1Label": "route", "cs1": route.get("id"),
        "cs2Label": "policyPath", "cs2": decision.get("path"),
        "cs3Label": "policyRevision", "cs3": decision.get("revision"),
        "cs4Label": "authMethod", "cs4": identity.get("method"),
        "cs5Label": "groups", "cs5": ",".join(identity.get("groups") or []) or None,
        "cs6Label": "requestId", "cs6": event.get("request_id"),
        "cn1Label": "httpStatus", "cn1": event.get("status"),
        "cn2Label": "upstreamStatus", "cn2": (event.get("upstream") or {}).get("status"),
    }
    # A label without its value is noise; drop both.
    for key in [k for k in extension if k.endswith("Label")]:
        if extension.get(key[: -len("Label")]) is None:
            del extension[key]
    ext = " ".join(f"{key}={escape_extension(value)}" for key, value in extension.items() if value is not None)
    header = "|".join(escape_header(part) for part in (
        VENDOR, PRODUCT, __version__, f"{outcome}:{event.get('reason', '')}", name,
        SEVERITY.get(outcome, 5)))
    return f"CEF:0|{header}|{ext}"
