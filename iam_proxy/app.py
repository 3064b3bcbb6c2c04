"""build_proxy(settings) -> the proxy and admin ASGI apps, wired from validated settings.

The proxy app answers its own endpoints (`/.well-known/jwks.json`) and hands everything else to the
pipeline. The admin app serves `/healthz`, `/readyz` and `/metrics` on a separate listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .audit.auditor import Auditor
from .audit.metrics import Board
from .authn.base import Authenticator
from .authn.jwks import JWKSCache
from .authn.oidc_session import build_browser_login
from .authn.registry import Deps, build_authenticators
from .core import redaction
from .core.asgi import Receive, Scope, Send
from .core.networks import TrustedNetworks
from .core.responses import send_error, send_json
from .enrich.registry import Deps as EnricherDeps
from .enrich.registry import build_enrichers
from .extauthz import ExtAuthz
from .extauthz.adapter import PipelineDecide
from .forward.assertion import AssertionSigner
from .forward.headers import HeaderRewriter
from .forward.upstream import UpstreamClient
from .forward_auth import AUTH_PATH, PROBLEM_PATH, ForwardAuth, NotServed, send_rendered_refusal
from .frontdoor import FrontDoors
from .ops.metrics import Metrics
from .ops.workerset import WorkerSet
from .pipeline import Pipeline
from .policy.runtime import PolicyRuntime
from .portal import Portal
from .portal.frame import Endpoint, Frame
from .ratelimit import Traffic
from .replay.shadow import ShadowRunner
from .routes.matcher import RouteTable
from .session import build_session_manager
from .settings import Settings
from .settings.audit import AuditSettings
from .settings.saml import SAMLAuthenticatorSettings
from .signals import PUSH_PATH
from .signals.receiver import Caches
from .signals.runtime import SignalsRuntime
from .websocket import WebSocketProxy

if TYPE_CHECKING:
    from .directory import LdapDirectoryClient

log = logging.getLogger("iam_proxy")

JWKS_PATH = "/.well-known/jwks.json"
SAML_PREFIX = "/.iam/saml/"
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class Proxy:
    def __init__(self, settings: Settings, worker: int = 0, audit_board: Board | None = None,
                 audit: AuditSettings | None = None, previous: "Proxy | None" = None) -> None:
        """`worker`: this process's number among `listeners.workers`; `audit_board`: the audit
        metrics table the workers share (see audit/metrics.py); `audit`: the audit settings to build
        with, when not `settings.audit` (`iam-proxy check` relocates the journal); `previous`: the
        proxy a reload replaces, whose running auditor and session store are taken over when their
        settings did not change (lifecycle/reload.py)."""
        self.settings = settings
        self.worker = worker
        # audit events, decision logs and explain mask every header the config reads a credential from
        redaction.configure(getattr(a, "header") for a in settings.authenticators.values() if hasattr(a, "header"))
        self.metrics = Metrics()
        # first: every front door records through it (audit/writeahead.py)
        self.inherited = {part for part in ("audit", "sessions")
                          if previous is not None and getattr(previous.settings, part) == getattr(settings, part)}
        if "audit" in self.inherited and audit is None:
            self.auditor = previous.auditor
            self.auditor.metrics.register(self.metrics.registry)
        else:
            self.auditor = Auditor(audit or settings.audit, self.metrics.registry, worker=worker,
                                   workers=settings.listeners.workers, board=audit_board)
        self.policy = PolicyRuntime(settings, self.metrics)
        self.engine = self.policy.default_engine
        self._http: aiohttp.ClientSession | None = None
        providers = {p.id: p for p in settings.identity_providers}
        self.jwks = {pid: JWKSCache(p, self._outbound_session) for pid, p in providers.items()}
        self.directories = _directories(settings)
        self.sessions = previous.sessions if "sessions" in self.inherited else \
            build_session_manager(settings.sessions) if settings.sessions.secret else None
        self.saml = self._build_saml(settings)
        self.browser_login = build_browser_login(settings, self.sessions, self.jwks, self._outbound_session)
        self.authenticators: dict[str, Authenticator] = build_authenticators(
            Deps(settings=settings, jwks=self.jwks, http_session=self._outbound_session, metrics=self.metrics,
                 directories=self.directories, saml=self.saml.authenticator if self.saml is not None else None,
                 browser_login=self.browser_login))
        self.signals = self._build_signals(settings)
        if self.signals is not None:  # revoked subjects are refused whatever credential they bring
            self.authenticators = self.signals.guard(self.authenticators)
        self.enrichers = build_enrichers(EnricherDeps(settings=settings, directories=self.directories,
                                                      http_session=self._outbound_session, metrics=self.metrics))
        if self.signals is not None:
            self.signals.receiver.caches.enrichers = [e for e in self.enrichers.values() if hasattr(e, "forget")]
        assertion = settings.identity_headers.assertion
        self.signer = AssertionSigner(assertion.key_file, assertion.issuer, assertion.ttl_seconds,
                                      reuse_seconds=assertion.reuse_seconds, algorithm=assertion.algorithm)
        # an upstream echoing the signed assertion must not hand it to the client
        self.upstream = UpstreamClient(withheld_response_headers=frozenset(
            {settings.identity_headers.assertion.header.lower().encode("latin-1")}))
        self.rewriter = HeaderRewriter(settings.identity_headers, TrustedNetworks(settings.listeners.trusted_proxies),
                                       session_cookie=settings.sessions.cookie_name)
        self.forward_auth = ForwardAuth(settings.forward_auth.trusted_peers, settings.listeners.trusted_proxies,
                                        only=settings.forward_auth.only)
        self.traffic = Traffic(settings.rate_limits, self.metrics.registry)
        self.pipeline = Pipeline(
            routes=RouteTable(settings.routes), authenticators=self.authenticators, decider=self.policy.decider,
            rewriter=self.rewriter, signer=self.signer, auditor=self.auditor, enrichers=self.enrichers,
            include_input=settings.audit.include_input,
        )
        self.doors = FrontDoors(pipeline=self.pipeline, upstream=self.upstream, rewriter=self.rewriter,
                                auditor=self.auditor, metrics=self.metrics, forward_auth=self.forward_auth,
                                decision_log=self.policy.decision_log, traffic=self.traffic)
        self.doors.shadow = ShadowRunner(settings.routes, self.metrics.registry, self.auditor)
        decide = PipelineDecide(self.doors, settings.ext_authz.trusted_peers)  # a request decided, not forwarded
        self.extauthz = ExtAuthz(settings.ext_authz, decide, shared_port=settings.listeners.workers > 1)
        self.websockets = WebSocketProxy(decide, self.auditor, settings.websockets.recheck_seconds)
        self.portal = Portal(self.browser_login, self.pipeline.routes, self.auditor) \
            if self.browser_login is not None else None
        self._tasks: list[asyncio.Task[Any]] = []
        # the published assertion keys: read and audited like any own endpoint (other methods are proxied)
        self._keys = Frame([Endpoint(JWKS_PATH, frozenset({"GET", "HEAD"}), self._jwks_document, "jwks")], self.auditor)
        self._endpoints = self._own_endpoints()
        self.draining = False  # set on SIGTERM (server.py): /readyz turns 503 while requests finish
        self.peers: WorkerSet | None = None  # worker 0 of several: the other workers (server.py)
        self.readiness_detail: dict[str, Any] = {}  # shown by /readyz: the last config reload

    def _build_signals(self, settings: Settings) -> SignalsRuntime | None:
        """The OpenID Shared Signals receiver, given what it ends and forgets (signals/receiver.py)."""
        if settings.signals is None:
            return None
        providers = {p.id: p.issuer for p in settings.identity_providers}
        providers.update({n: None for n, a in settings.authenticators.items() if isinstance(a, SAMLAuthenticatorSettings)})
        caches = Caches(sessions=self.sessions, session_providers=providers,
                        introspection=[a for a in self.authenticators.values() if hasattr(a, "forget")],
                        decision_cache=self.policy.decider.cache)
        return SignalsRuntime(settings.signals, self.auditor, caches, self._outbound_session, self.worker)

    def _build_saml(self, settings: Settings):
        """pysaml2 is imported only when a SAML authenticator is configured (it is heavy to load)."""
        if self.sessions is None or not any(isinstance(a, SAMLAuthenticatorSettings)
                                            for a in settings.authenticators.values()):
            return None
        from .portal.saml_runtime import SAMLRuntime

        return SAMLRuntime(settings, self.sessions, RouteTable(settings.routes), self._outbound_session,
                           auditor=self.auditor)

    def _outbound_session(self) -> aiohttp.ClientSession:
        """One pooled session for the proxy's own calls (JWKS, discovery); bounded by per-call timeouts."""
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20))
        return self._http

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if "audit" not in self.inherited:
            await self.auditor.start()  # delivery tasks first: they ship what a previous run left spooled
        await asyncio.gather(*(cache.refresh() for cache in self.jwks.values()))
        for cache in self.jwks.values():
            self._tasks.append(asyncio.create_task(cache.run_periodic()))
        for job in [*self.policy.background(), *self.traffic.background()]:
            self._tasks.append(asyncio.create_task(job))
        self.doors.shadow.start()
        if self.signals is not None:
            self._tasks += [asyncio.create_task(job) for job in self.signals.background()]
        if self.saml is not None:
            await self.saml.start()
            self._tasks += [asyncio.create_task(job) for job in self.saml.background()]
        await self.extauthz.start()  # checks are answered once authentication is ready

    async def stop(self, handed_over: frozenset[str] = frozenset()) -> None:
        """`handed_over`: the parts ("audit", "sessions") a reload's new proxy took over, left running."""
        await self.extauthz.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.upstream.close()
        await self.doors.shadow.stop()
        await self.policy.close()
        await self.traffic.close()
        for directory in self.directories.values():
            await directory.close()
        if self.saml is not None:
            await self.saml.close()
        if self.sessions is not None and "sessions" not in handed_over:
            await self.sessions.close()
        if self._http is not None:
            await self._http.close()
        if "audit" not in handed_over:
            await self.auditor.stop()

    @property
    def ready(self) -> tuple[bool, dict[str, bool]]:
        checks = {"accepting": not self.draining,
                  "policies": all(self.policy.ready_checks().values()), **self.policy.ready_checks()}
        checks.update({f"jwks:{pid}": cache.ready for pid, cache in self.jwks.items()})
        checks.update(self.traffic.ready_checks())
        if self.saml is not None:
            checks[f"saml:{self.saml.sp.name}"] = self.saml.sp.ready
        if self.settings.ext_authz.grpc is not None:
            checks["ext_authz:grpc"] = self.extauthz.ready
        return all(checks.values()), checks

    # ------------------------------------------------------------------ ASGI apps

    def _own_endpoints(self) -> dict[str, App]:
        """The proxy's own paths, each to the front door that answers it; every other path is proxied."""
        table: dict[str, App] = {JWKS_PATH: self._jwks, AUTH_PATH: self.doors.forward_auth_check,
                                 PROBLEM_PATH: self._problem}
        if self.signals is not None:
            table[PUSH_PATH] = self.signals.push.handle
        for portal in (self.portal, self.saml.portal if self.saml is not None else None):
            if portal is not None:
                table.update(dict.fromkeys(portal.frame.paths, portal.frame))
        return table

    async def proxy_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await self.websockets.handle(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        endpoint = self._endpoints.get(path)
        if endpoint is None and self.saml is not None and path.startswith(SAML_PREFIX):
            endpoint = self.saml.portal.frame  # its frame answers 404 for an unknown SAML path
        await (endpoint or self.doors.proxy)(scope, receive, send)

    async def _jwks(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await self.doors.proxy(scope, receive, send)  # only reading the keys is the proxy's own
            return
        await self._keys(scope, receive, send)

    async def _jwks_document(self, ctx: Any, receive: Receive, send: Send) -> int:
        return await send_json(send, 200, self.signer.jwks(), [(b"cache-control", b"public, max-age=300")])

    async def _problem(self, scope: Scope, receive: Receive, send: Send) -> None:
        """nginx's error location: render the refusal /.iam/auth decided (front proxies only)."""
        try:
            self.forward_auth.admit(scope)
        except NotServed as exc:
            await send_error(send, exc, "-")
            return
        await send_rendered_refusal(scope, send)

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
            body = {"status": "ready" if ok else "not ready", "checks": checks,
                    "policy_revision": self.engine.revision, **self.traffic.readiness(), **self.readiness_detail}
            if self.peers is not None:
                ok, body = await self.peers.readiness(body)
            await send_json(send, 200 if ok else 503, body)
        elif path == "/metrics":
            body = generate_latest(self.metrics.registry)
            if self.peers is not None:
                body = await self.peers.metrics(body)
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


def _directories(settings: Settings) -> dict[str, LdapDirectoryClient]:
    """One client per configured directory; ldap3 is imported only when there is one."""
    if not settings.directories:
        return {}
    from .directory import LdapDirectoryClient

    return {d.id: LdapDirectoryClient(d) for d in settings.directories}


async def _null_lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
