"""Value conversions the renderers share: times, addresses, the Host header."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime

# a DNS name or an IPv4 address, as OCSF's hostname_t and ECS's *.domain expect them
_HOSTNAME = re.compile(r"^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*"
                       r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9])$")


def epoch_ms(timestamp: str | None) -> int | None:
    """Milliseconds since the epoch (CEF `rt`, OCSF `time`)."""
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000) if timestamp else None


def ip_or_none(address: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(address or ""))
    except ValueError:
        return None


def split_host(host: str | None) -> tuple[str | None, int | None]:
    """A Host header as (name, port); the name is None when it is not a valid host name or IP."""
    if not host:
        return None, None
    name, port = host, None
    if host.startswith("["):  # [v6]:port
        name, _, rest = host[1:].partition("]")
        port_text = rest.removeprefix(":")
        port = int(port_text) if port_text.isdigit() else None
        return (name if ip_or_none(name) else None), port
    if host.count(":") == 1:
        name, port_text = host.split(":")
        port = int(port_text) if port_text.isdigit() and int(port_text) < 65536 else None
    return (name if _HOSTNAME.match(name) or ip_or_none(name) else None), port
