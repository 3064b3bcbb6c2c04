"""Poll delivery (RFC 8936): ask the transmitter's poll endpoint for SETs, acknowledge the ones
handled in the next request (`ack`), report refused ones (`setErrs`), and ask again at once while
it says `moreAvailable`. A failure to reach the transmitter is logged and retried after the
interval; SETs not acknowledged are delivered again (and de-duplicated by jti).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from .receiver import Receiver
from .settings import TransmitterSettings
from .stream import TransmitterError, call

log = logging.getLogger("iam_proxy.signals")


class Poller:
    def __init__(self, transmitter: TransmitterSettings, poll_url: str, receiver: Receiver) -> None:
        self.transmitter = transmitter
        self.poll_url = poll_url
        self.receiver = receiver
        self._ack: list[str] = []
        self._errors: dict[str, dict[str, str]] = {}

    async def poll_once(self, session: aiohttp.ClientSession) -> bool:
        """One request; True when the transmitter has more."""
        body: dict[str, Any] = {"maxEvents": self.transmitter.poll_max_events, "returnImmediately": True}
        if self._ack:
            body["ack"] = self._ack
        if self._errors:
            body["setErrs"] = self._errors
        answer = await call(session, self.transmitter, "POST", self.poll_url, body)
        self._ack, self._errors = [], {}  # the transmitter has them now
        if not isinstance(answer, dict) or not isinstance(answer.get("sets", {}), dict):
            raise TransmitterError(f"POST {self.poll_url}: not a poll response")
        for jti, token in (answer.get("sets") or {}).items():
            if not isinstance(token, str):
                self._errors[jti] = {"err": "invalid_request", "description": "not a SET"}
                continue
            outcome = await self.receiver.receive(token, "poll")
            if outcome.status in ("accepted", "duplicate"):
                self._ack.append(jti)
            elif outcome.status == "rejected":
                self._errors[jti] = {"err": outcome.err, "description": outcome.description}
            # unavailable: neither acknowledged nor refused; it comes again
        return bool(answer.get("moreAvailable")) or bool(self._ack or self._errors)

    async def run(self, session_factory) -> None:
        while True:
            try:
                more = await self.poll_once(session_factory())
            except TransmitterError as exc:
                log.warning("polling %s failed: %s", self.transmitter.id, exc)
                more = False
            if not more:
                await asyncio.sleep(self.transmitter.poll_interval_seconds)
