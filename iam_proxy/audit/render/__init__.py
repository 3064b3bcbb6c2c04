"""Renderers: the native event -> the document a SIEM expects.

    native  the event as built (OPA decision-log compatible names)
    ecs     Elastic Common Schema field names
    ocsf    OCSF API Activity (6003) or Authentication (3002)
    cef     ArcSight CEF, one line of text

`render(event, fmt)` returns a dict for the JSON formats and a str for CEF; `to_line` encodes either
as one record that no value can split (see `json_bytes`).
"""

from __future__ import annotations

from typing import Any, Callable

import orjson

from . import cef, ecs, ocsf

RENDERERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "native": lambda event: event,
    "ecs": ecs.render,
    "ocsf": ocsf.render,
    "cef": cef.render,
}

# orjson escapes every C0 control character (CR, LF, ESC, ...). It leaves U+2028/U+2029 raw, which
# is valid JSON but a line break to JavaScript and to Python's str.splitlines(); escape them too.
_LINE_SEPARATORS = (("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


def json_bytes(document: Any) -> bytes:
    """One JSON text with no raw line terminator of any kind inside it."""
    try:  # orjson's option for non-string keys doubles the cost of every event that has none
        data = orjson.dumps(document)
    except orjson.JSONEncodeError:
        data = orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS)
    # isascii() is a word-at-a-time scan; a two-byte `in` over a 2 KB event cost more than encoding it
    if not data.isascii() and b"\xe2\x80" in data:
        for raw, escaped in _LINE_SEPARATORS:
            data = data.replace(raw, escaped)
    return data


def render(event: dict[str, Any], fmt: str) -> Any:
    return RENDERERS[fmt](event)


def to_bytes(rendered: Any) -> bytes:
    """A rendered document as one record (no trailing newline)."""
    if isinstance(rendered, str):
        return rendered.encode("utf-8")
    return json_bytes(rendered)
