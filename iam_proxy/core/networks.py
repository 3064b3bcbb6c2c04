"""Trusted networks: the front proxies and load balancers whose word about the client is believed."""

from __future__ import annotations

import ipaddress
from functools import lru_cache


class TrustedNetworks:
    def __init__(self, cidrs: list[str]) -> None:
        self._networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def __bool__(self) -> bool:
        return bool(self._networks)

    @lru_cache(maxsize=4096)
    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def client_of(self, peer: str, forwarded_for: str | None) -> str:
        """The original client: walking X-Forwarded-For from the right, the first hop that is not a
        trusted proxy (the leftmost entries are whatever the client wrote)."""
        if peer not in self or not forwarded_for:
            return peer
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            if hop and hop not in self:
                return hop
        return peer
