"""The remote engine: an OPA server asked over its REST data API, `POST /v1/data/<path>`.

Every failure fails closed with its own exception (mapped to a reason code by `engine.decide`):

    connection refused or reset, 5xx, 4xx      EngineUnavailable        -> policy_unavailable (503)
    no answer within timeout_seconds           EngineTimeout            -> policy_timeout (503)
    not JSON, not an object, unknown keys      MalformedEngineResponse  -> policy_malformed (403)
    `{}` (no `result`)                          UndefinedDecision        -> policy_undefined (403)
    evaluation error (conflict, ...)           PolicyEvaluationError    -> policy_error (403)

The client is aiohttp (already the proxy's upstream client, chosen by benchmark): one pooled
session with keep-alive, a semaphore bounding decisions in flight, and one deadline covering the
wait for a slot, the connection and the answer. A request cancelled by its deadline has its
connection closed, so a late answer can never be read as the answer to a later decision.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson

from ..settings.policy import OpaServerSettings
from .engine import (
    EngineResult,
    EngineTimeout,
    EngineUnavailable,
    MalformedEngineResponse,
    PolicyEvaluationError,
    UndefinedDecision,
)

log = logging.getLogger("iam_proxy.policy.opa")

# Keys OPA may put beside (or, for an undefined decision, instead of) `result`.
_OPA_RESPONSE_KEYS = frozenset({"result", "decision_id", "metrics", "provenance", "warning"})
_MAX_RESPONSE_BYTES = 4 * 1024 * 1024


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    payload = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        payload += chunk
        if len(payload) > _MAX_RESPONSE_BYTES:
            break
    return bytes(payload)


class OpaHttpEngine:
    name = "opa"

    def __init__(self, settings: OpaServerSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._headers = {"content-type": "application/json"}
        if settings.token is not None:
            self._headers["authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self._healthy = False
        self._revision = "opa"

    @property
    def revision(self) -> str:
        """The bundle revisions the server reported with its last answer, else its version."""
        return self._revision

    @property
    def ready(self) -> bool:
        return self._healthy

    def reload_if_changed(self) -> bool:
        return False  # the OPA server loads its own policies and bundles

    def _client(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        # Built on first use: an aiohttp session belongs to the running event loop.
        if self._session is None or self._slots is None:
            connector = aiohttp.TCPConnector(limit=self.settings.max_connections, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
            self._slots = asyncio.Semaphore(self.settings.max_concurrency)
        return self._session, self._slots

    async def decide(self, path: str, policy_input: dict[str, Any]) -> EngineResult:
        session, slots = self._client()
        url = f"{self.settings.url}/v1/data/{path}?provenance=true"
        body = orjson.dumps({"input": policy_input})
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                async with slots:
                    async with session.post(url, data=body, headers=self._headers) as response:
                        status = response.status
                        payload = await _read_bounded(response)
        except TimeoutError:
            raise EngineTimeout(f"no answer from OPA within {self.settings.timeout_seconds}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            self._healthy = False
            raise EngineUnavailable(f"OPA unreachable: {type(exc).__name__}") from None
        self._healthy = True
        return EngineResult(value=self._read(status, payload), revision=self._revision, engine=self.name)

    def _read(self, status: int, payload: bytes) -> Any:
        if len(payload) > _MAX_RESPONSE_BYTES:
            raise MalformedEngineResponse("OPA response too large")
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            document = None
            if status == 200:
                raise MalformedEngineResponse("OPA answered with something that is not JSON") from None
        if status != 200:
            errors = document.get("errors") if isinstance(document, dict) else None
            codes = [e.get("code") for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
            if status == 500 and any(isinstance(c, str) and c.startswith("eval_") for c in codes):
                raise PolicyEvaluationError(", ".join(codes))
            raise EngineUnavailable(f"OPA answered HTTP {status}")
        if not isinstance(document, dict):
            raise MalformedEngineResponse("OPA response is not a JSON object")
        unexpected = set(document) - _OPA_RESPONSE_KEYS
        if unexpected:
            raise MalformedEngineResponse(f"unexpected keys in OPA response: {sorted(unexpected)}")
        self._note_revision(document.get("provenance"))
        if "result" not in document:
            raise UndefinedDecision("OPA returned no result")
        return document["result"]

    def _note_revision(self, provenance: Any) -> None:
        if not isinstance(provenance, dict):
            return
        bundles = provenance.get("bundles")
        if isinstance(bundles, dict) and bundles:
            self._revision = ",".join(f"{name}:{(info or {}).get('revision', '')}"
                                      for name, info in sorted(bundles.items()) if isinstance(info, dict))
        elif isinstance(provenance.get("version"), str):
            self._revision = f"opa-{provenance['version']}"

    async def check_health(self) -> bool:
        """`GET /health`: 200 when the server has loaded its policies and bundles."""
        session, _ = self._client()
        try:
            async with asyncio.timeout(max(self.settings.timeout_seconds, 1.0)):
                async with session.get(f"{self.settings.url}/health", headers=self._headers) as response:
                    await response.read()
                    self._healthy = response.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            self._healthy = False
        return self._healthy

    async def run_health_checks(self) -> None:
        while True:
            was = self._healthy
            if await self.check_health() != was:
                log.warning("OPA at %s is %s", self.settings.url, "up" if self._healthy else "DOWN")
            await asyncio.sleep(self.settings.health_interval_seconds)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
