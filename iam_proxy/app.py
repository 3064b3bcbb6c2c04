"""build_proxy(settings) -> the proxy and admin ASGI apps, wired from validated settings.

The proxy app answers its own endpoints (`/.well-known/jwks.json`) and hands everything else to the
pipeline. The admin app serves `/healthz`, `/readyz` and `/metrics` on a separate listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .audit.sinks import Auditor, build_sink
from .authn.base import Authenticator
from .authn.jwks import JWKSCache
from .authn.registry import Deps, build_authenticators
from .forward.assertion import AssertionSigner
from .forward.headers import HeaderRewriter, TrustedProxies
from .forward.upstream import UpstreamClient
from .ops.metrics import Metrics
from .pipeline import Pipeline
from .policy.embedded import EmbeddedEngine
from .policy.engine import PolicyEngine
from .responses import send_json
from .routes.matcher import RouteTable
from .settings import Settings

log = logging.getLogger("iam_proxy")

JWKS_PATH = "/.well-known/jwks.json"
FORWARD_AUTH_PATH = "/.iam/auth"


def build_engine(settings: Settings, metrics: Metrics) -> PolicyEngine:
    entrypoints = [route.policy.path for route in settings.routes]
    return EmbeddedEngine(settings.policy.dir, entrypoints, metrics=metrics)


class Proxy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.engine = build_engine(settings, self.metrics)
        self._http: aiohttp.ClientSession | None = None
        providers = {p.id: p for p in settings.identity_providers}
        self.jwks = {pid: JWKSCache(p, self._outbound_session) for pid, p in providers.items()}
        self.authenticators: dict[str, Authenticator] = build_authenticators(
            Deps(settings=settings, jwks=self.jwks, http_session=self._outbound_session, metrics=self.metrics))
        assertion = settings.identity_headers.assertion
        self.signer = AssertionSigner(assertion.key_file, assertion.issuer, assertion.ttl_seconds)
        self.upstream = UpstreamClient()
        self.auditor = Auditor([build_sink(s) for s in settings.audit.sinks], self.metrics)
        self.rewriter = HeaderRewriter(settings.identity_headers, TrustedProxies(settings.listeners.trusted_proxies))
        self.pipeline = Pipeline(
            routes=RouteTable(settings.routes), authenticators=self.authenticators, engine=self.engine,
            rewriter=self.rewriter, signer=self.signer, upstream=self.upstream, auditor=self.auditor,
            metrics=self.metrics, include_input=settings.audit.include_input,
        )
        self._tasks: list[asyncio.Task[Any]] = []

    def _outbound_session(self) -> aiohttp.ClientSession:
        """One pooled session for the proxy's own calls (JWKS, discovery); bounded by per-call timeouts."""
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20))
        return self._http

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await asyncio.gather(*(cache.refresh() for cache in self.jwks.values()))
        for cache in self.jwks.values():
            self._tasks.append(asyncio.create_task(cache.run_periodic()))
        if self.settings.policy.reload_interval_seconds > 0:
            self._tasks.append(asyncio.create_task(self._watch_policies()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.upstream.close()
        await self.engine.close()
        if self._http is not None:
            await self._http.close()
        self.auditor.close()

    async def _watch_policies(self) -> None:
        while True:
            await asyncio.sleep(self.settings.policy.reload_interval_seconds)
            try:
                self.engine.reload_if_changed()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad reload
                log.exception("policy watcher error")

    @property
    def ready(self) -> tuple[bool, dict[str, bool]]:
        checks = {"policies": self.engine.ready}
        checks.update({f"jwks:{pid}": cache.ready for pid, cache in self.jwks.items()})
        return all(checks.values()), checks

    # ------------------------------------------------------------------ ASGI apps

    async def proxy_app(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets arrive in a later issue; the server closes the connection
        if scope["path"] == JWKS_PATH and scope["method"] in ("GET", "HEAD"):
            await send_json(send, 200, self.signer.jwks(), [(b"cache-control", b"public, max-age=300")])
            return
        if scope["path"] == FORWARD_AUTH_PATH:
            await self.pipeline.handle(scope, receive, send, forward_auth=True)
            return
        await self.pipeline.handle(scope, receive, send)

    async def admin_app(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] == "lifespan":
            await _null_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/healthz":
            await send_json(send, 200, {"status": "ok"})
        elif path == "/readyz":
            ok, checks = self.ready
            await send_json(send, 200 if ok else 503, {"status": "ready" if ok else "not ready",
                                                       "checks": checks, "policy_revision": self.engine.revision})
        elif path == "/metrics":
            body = generate_latest(self.metrics.registry)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())]})
            await send({"type": "http.response.body", "body": body})
        elif path == JWKS_PATH:
            await send_json(send, 200, self.signer.jwks())
        else:
            await send_json(send, 404, {"status": 404, "reason": "not_found"})

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:  # noqa: BLE001
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _null_lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
