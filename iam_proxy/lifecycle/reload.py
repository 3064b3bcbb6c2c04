"""Hot reload: routes, providers, policies, authenticators and audit sinks from the config file, on
SIGHUP and when the file changes, without dropping a request.

`LiveProxy` serves the ASGI apps of the current `Proxy`. A reload reads and validates the whole
file, builds a complete new `Proxy` from it and swaps it in at once: a request runs entirely on the
proxy that was current when it arrived. Anything that fails (unreadable file, invalid config, a
policy that does not compile, a changed `listeners` section, which needs a restart) keeps the old
proxy serving and says why: in the log, in `iam_proxy_config_reloads_total{result="refused"}` and
`iam_proxy_config_reload_failing`, and under `config` in `/readyz` (which stays 200: the old
config still serves, and a bad ConfigMap must not take every replica out of rotation).

The running auditor and session store are handed to the new proxy when their settings did not
change, so audit chains and sessions continue. When the audit settings changed, the old auditor
must flush and close its files before the new one opens them: new requests wait (they are not
refused) until the requests in flight on the old proxy have finished, at most the shutdown grace.
The replaced proxy is stopped once its last request has finished.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..app import Proxy
from ..audit.metrics import Board
from ..core.errors import ConfigError
from ..settings import Settings, load_settings

log = logging.getLogger("iam_proxy.reload")

WATCH_SECONDS = 1.0


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


class LiveProxy:
    def __init__(self, settings: Settings, config_path: str | None, worker: int = 0,
                 board: Board | None = None, collectors: Iterable[Any] = ()) -> None:
        """`collectors`: the process's own metrics (listener counters), registered on every proxy."""
        self.path = Path(config_path) if config_path else None
        self.worker, self.board = worker, board
        self.grace = settings.listeners.shutdown_grace_seconds
        self.results = {"ok": 0, "refused": 0}
        self.last: dict[str, Any] = {"result": "started", "at": time.time()}
        self.digest = _digest(self.path) if self.path else ""
        self.applied = self.digest
        self.draining = False
        self._inflight: dict[Proxy, int] = {}
        self._idle: dict[Proxy, asyncio.Event] = {}
        self._open = asyncio.Event()
        self._open.set()
        self._lock = asyncio.Lock()
        self.collectors = [_ReloadMetrics(self), *collectors]
        self.current = self._adopt(Proxy(settings, worker, board))

    def _adopt(self, proxy: Proxy) -> Proxy:
        for collector in self.collectors:
            proxy.metrics.registry.register(collector)
        proxy.readiness_detail = {"config": self.last}
        return proxy

    # ------------------------------------------------------------------ ASGI

    async def proxy_app(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets stay on the proxy they opened on, uncounted
            await self.current.proxy_app(scope, receive, send)
            return
        if not self._open.is_set():
            await self._open.wait()
        proxy = self.current
        self._inflight[proxy] = self._inflight.get(proxy, 0) + 1
        try:
            await proxy.proxy_app(scope, receive, send)
        finally:
            left = self._inflight[proxy] = self._inflight.get(proxy, 1) - 1
            if not left:
                del self._inflight[proxy]
                if proxy in self._idle:
                    self._idle[proxy].set()

    async def admin_app(self, scope: dict[str, Any], receive, send) -> None:
        await self.current.admin_app(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        await receive()  # lifespan.startup
        try:
            await self.current.start()
        except Exception as exc:  # noqa: BLE001 - reported to the server, which exits non-zero
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        watcher = asyncio.create_task(self.watch()) if self.path else None
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        if watcher is not None:
            watcher.cancel()
        async with self._lock:
            await self.current.stop()
        await send({"type": "lifespan.shutdown.complete"})

    # ------------------------------------------------------------------ reload

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if self.path is not None and _digest(self.path) != self.digest:
                await self.reload("file changed")

    async def reload(self, why: str) -> bool:
        async with self._lock:
            if self.draining or self.path is None:
                return False
            self.digest = _digest(self.path)
            old = self.current
            try:
                settings = load_settings(self.path)
                if settings.listeners != old.settings.listeners:
                    raise ConfigError("listeners: changed; listener changes need a restart")
                if any(s.ext_authz.grpc or s.ext_authz.http for s in (settings, old.settings)):
                    raise ConfigError("ext_authz: its listeners are bound at start; a restart applies a new config")
                new = Proxy(settings, self.worker, self.board, previous=old)
            except Exception as exc:  # noqa: BLE001 - whatever it is, the old config keeps serving
                return self._refused(why, exc)
            new.peers = old.peers
            try:
                if "audit" not in new.inherited:
                    await self._switch_audit(old, new)
                else:
                    await self._start_or_stop(new)
                    self.current = self._adopt(new)
                    asyncio.create_task(self._retire(old, frozenset(new.inherited)))
            except Exception as exc:  # noqa: BLE001
                return self._refused(why, exc)
            self.applied = self.digest
            self.results["ok"] += 1
            self._record({"result": "ok", "why": why, "policy_revision": new.engine.revision})
            log.warning("config reloaded (%s): policy revision %s", why, new.engine.revision)
            return True

    async def _switch_audit(self, old: Proxy, new: Proxy) -> None:
        """New requests wait while the old proxy finishes its own and its auditor closes the files."""
        self._open.clear()
        try:
            await self._until_idle(old)
            await old.stop()
            try:
                await self._start_or_stop(new)
            except Exception:
                revived = Proxy(old.settings, self.worker, self.board)  # the old one's files are closed
                revived.peers = old.peers
                await revived.start()
                self.current = self._adopt(revived)
                raise
            self.current = self._adopt(new)
        finally:
            self._open.set()

    @staticmethod
    async def _start_or_stop(proxy: Proxy) -> None:
        try:
            await proxy.start()
        except Exception:
            await proxy.stop(frozenset(proxy.inherited))
            raise

    async def _retire(self, old: Proxy, handed_over: frozenset[str]) -> None:
        await self._until_idle(old)
        await old.stop(handed_over)

    async def _until_idle(self, proxy: Proxy) -> None:
        if self._inflight.get(proxy, 0):
            self._idle[proxy] = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle[proxy].wait(), self.grace)
            except asyncio.TimeoutError:
                log.error("%d request(s) still running on the replaced config after %ss",
                          self._inflight[proxy], self.grace)
        self._idle.pop(proxy, None)

    def _refused(self, why: str, exc: Exception) -> bool:
        reason = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        self.results["refused"] += 1
        self._record({"result": "refused", "why": why, "error": reason})
        log.error("config reload refused (%s), the previous config keeps serving: %s", why, reason)
        return False

    def _record(self, last: dict[str, Any]) -> None:
        self.last = {**last, "at": time.time()}
        self.current.readiness_detail = {"config": self.last}


class _ReloadMetrics:
    def __init__(self, live: LiveProxy) -> None:
        self.live = live

    def collect(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily("iam_proxy_config_reloads", "Config reloads by result (ok, refused)",
                                      labels=["result"])
        for result, count in self.live.results.items():
            reloads.add_metric([result], count)
        yield reloads
        yield GaugeMetricFamily("iam_proxy_config_reload_failing",
                                "1 when the config file on disk is not the one serving (its reload was refused)",
                                value=1 if self.live.digest != self.live.applied else 0)
