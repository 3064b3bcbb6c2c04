"""The signals receiver as the proxy runs it, built once from settings and the proxy's parts:

    runtime = SignalsRuntime(settings.signals, auditor, caches, session_factory)
    authenticators = runtime.guard(authenticators)   # refuse revoked subjects
    await runtime.push.handle(scope, receive, send)  # POST /.iam/ssf/events
    runtime.background()                             # per transmitter: set up, then poll (poll delivery)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine

from .poll import Poller
from .push import PushEndpoint
from .receiver import Caches, Receiver
from .revocations import RevocationGuard, Revocations
from .settings import SignalsSettings, TransmitterSettings
from .stream import TransmitterError, set_up
from .tokens import SetVerifier

log = logging.getLogger("iam_proxy.signals")

RETRY_SECONDS = (1, 2, 5, 10, 30)


class SignalsRuntime:
    def __init__(self, settings: SignalsSettings, auditor: Any, caches: Caches, session_factory,
                 worker: int = 0) -> None:
        self.settings = settings
        self.worker = worker  # of listeners.workers: only worker 0 polls (others learn from state_file)
        self.revocations = Revocations(settings.revocation_ttl_seconds, journal=settings.state_file)
        self.receiver = Receiver(settings, self.revocations, caches, auditor)
        self.push = PushEndpoint(self.receiver)
        self._session_factory = session_factory

    def guard(self, authenticators: dict[str, Any]) -> dict[str, Any]:
        return {name: RevocationGuard(a, self.revocations) for name, a in authenticators.items()}

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [self._run(t) for t in self.settings.transmitters]

    async def _run(self, transmitter: TransmitterSettings) -> None:
        attempt = 0
        while True:  # the transmitter may be down at startup: keep trying, the proxy serves meanwhile
            try:
                setup = await set_up(self._session_factory(), transmitter, manage=self.worker == 0)
                verifier = SetVerifier(transmitter, setup.jwks_uri, self._session_factory)
                await verifier.jwks.refresh()
                if not verifier.jwks.ready:
                    raise TransmitterError(f"no keys at {setup.jwks_uri}")
                break
            except TransmitterError as exc:
                delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                log.warning("shared signals transmitter %s not set up (%s); retrying in %ss", transmitter.id, exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
        self.receiver.verifiers[transmitter.issuer] = verifier
        log.info("shared signals transmitter %s ready (%s delivery)", transmitter.id, transmitter.delivery)
        jobs = [verifier.jwks.run_periodic()]
        if transmitter.delivery == "poll" and self.worker == 0:
            assert setup.poll_url is not None  # set_up checks it in worker 0
            jobs.append(Poller(transmitter, setup.poll_url, self.receiver).run(self._session_factory))
        await asyncio.gather(*jobs)
