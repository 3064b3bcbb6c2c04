"""Field validators shared by the settings models."""

from __future__ import annotations

import re

_HTTP_URL = re.compile(r"^https?://[^/\s]+")


def http_url(value: str) -> str:
    """An absolute http:// or https:// URL, without a trailing slash."""
    if not _HTTP_URL.match(value):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")
