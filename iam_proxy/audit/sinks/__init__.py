"""Audit sinks.

Direct sinks (file, stdout) write each event synchronously as the request ends: the local file is
its own durable store. Delivered sinks (syslog, HTTP collectors) are fed from the spool by a
delivery task each (see delivery.py): `encode` turns a batch into a payload once, `send` delivers
it or raises, and the task retries the same payload until it succeeds.
"""

from __future__ import annotations

from typing import Any, Protocol


class DirectSink(Protocol):
    healthy: bool

    def write(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class DeliveredSink(Protocol):
    target: str  # where it delivers, for the log: tls://host:port, or the URL (never a credential)

    def encode(self, events: list[dict[str, Any]]) -> Any: ...

    async def send(self, payload: Any) -> None: ...

    async def close(self) -> None: ...
