"""Who a request counts against: the value of a limit's `key` kind for one request.

    identity  the issuer and subject (anonymous callers: their network)
    client    the calling application: the first identity attribute of `client_attributes`
              (OAuth client id, authorized party, API key id), else the client certificate's
              fingerprint, else the identity
    route     the route
    network   the source address, grouped by prefix (`network.ipv4_prefix`, `ipv6_prefix`)
"""

from __future__ import annotations

import hashlib
import ipaddress

from ..authn.identity import Identity
from .config import NetworkKey


class KeyMaker:
    def __init__(self, client_attributes: list[str], network: NetworkKey) -> None:
        self._client_attributes = client_attributes
        self._network = network

    def value(self, kind: str, identity: Identity, route_id: str, address: str) -> str:
        if kind == "route":
            return f"route:{route_id}"
        if kind == "network":
            return self.network(address)
        if kind == "client":
            for name in self._client_attributes:
                found = identity.attributes.get(name)
                if isinstance(found, str) and found:
                    return f"client:{name}:{found}"
            if identity.cert is not None and identity.cert.get("fingerprint"):
                return f"client:cert:{identity.cert['fingerprint']}"
        if identity.anonymous:
            return self.network(address)
        return f"identity:{identity.iss or ''}|{identity.sub}"

    def network(self, address: str) -> str:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return f"network:{address}"  # a unix socket peer or an unparsable one: counted as itself
        prefix = self._network.ipv4_prefix if ip.version == 4 else self._network.ipv6_prefix
        return f"network:{ipaddress.ip_network(f'{ip}/{prefix}', strict=False)}"


def storage_key(limit_id: str, value: str) -> str:
    """Bounded and free of identity values in clear: the limit id and a digest of the value."""
    return f"{limit_id}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"
