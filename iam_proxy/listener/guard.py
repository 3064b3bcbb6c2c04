"""One listener's Guard: the protocol factory uvicorn is given (its `http` option), tying together
the limits, the per-client ledger, TLS with watched handshakes, and the counters and log."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any, Callable

from .counters import ListenerCounters
from .handshake import WatchedTLS
from .ledger import ConnectionLedger
from .limits import ListenerLimits
from .protocol import STATUS, GuardedHttp

log = logging.getLogger("iam_proxy.listener")

Client = tuple[str, int] | None


class LogBudget:
    """At most `lines` log lines per `window` seconds, so a flood of refusals cannot flood the log;
    the first line after a quiet spell says how many were left out (the counters have them all)."""

    def __init__(self, lines: int = 20, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.lines, self.window, self._clock = lines, window, clock
        self._start = -window
        self._used = 0
        self.suppressed = 0

    def warning(self, message: str, *args: Any) -> None:
        now = self._clock()
        if now - self._start >= self.window:
            self._start, self._used = now, 0
        if self._used >= self.lines:
            self.suppressed += 1
            return
        self._used += 1
        if self.suppressed:
            message += " (%d similar lines left out before this one)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        log.warning(message, *args)


def _who(client: Client) -> str:
    return f"{client[0]}:{client[1]}" if client else "unknown peer"


class Guard:
    """The defences of listener `name` ("proxy" or "admin"); `tls`: its server context, or None."""

    def __init__(self, name: str, limits: ListenerLimits, counters: ListenerCounters,
                 tls: ssl.SSLContext | None = None, log_budget: LogBudget | None = None) -> None:
        self.name = name
        self.limits = limits
        self.counters = counters
        self.tls = tls
        self.ledger = ConnectionLedger(limits.max_connections_per_client)
        self._log = log_budget or LogBudget()

    def __call__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> asyncio.BaseProtocol:
        """uvicorn's create_protocol calls this once per accepted connection."""
        http = GuardedHttp(config, server_state, app_state, _loop, guard=self, own_slot=self.tls is None)
        if self.tls is None:
            return http
        return WatchedTLS(self, http, self.tls, http.loop)

    def admit(self, client: Client) -> bool:
        if self.ledger.admit(client[0] if client else ""):
            return True
        self.refused(client, "connection_limit")
        return False

    def release(self, client: Client) -> None:
        self.ledger.release(client[0] if client else "")

    def refused(self, client: Client, reason: str) -> None:
        self.counters.refused(self.name, reason)
        self._log.warning("%s listener refused %s: %s (%d)", self.name, _who(client), reason, STATUS[reason])

    def handshake_failed(self, client: Client, reason: str, detail: str) -> None:
        self.counters.handshake_failed(self.name, reason)
        self._log.warning("%s listener: TLS handshake with %s failed: %s (%s)", self.name, _who(client), reason,
                          detail)
