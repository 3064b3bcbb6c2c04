"""Open connections per client address, so that one address cannot take every connection."""

from __future__ import annotations


class ConnectionLedger:
    """Counts one event loop's open connections by peer address (no lock: one loop, one thread)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        """Take a slot for `address`; False (and nothing taken) when it already has `limit`."""
        count = self._open.get(address, 0)
        if count >= self.limit:
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)

    def open(self, address: str) -> int:
        return self._open.get(address, 0)
