"""JWKS per identity provider: discovery, a cached key set, bounded refetch on an unknown `kid`.

A refetch replaces the whole key set, so a key the issuer removed stops verifying at the next fetch
(periodic, or triggered by a token whose kid is unknown).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import orjson
from joserfc.jwk import KeySet

from ..outbound import read_limited
from ..settings.identity import JWTProvider

log = logging.getLogger("iam_proxy.jwks")

_MAX_JWKS_BYTES = 512 * 1024


class JWKSUnavailable(Exception):
    pass


class JWKSCache:
    def __init__(self, provider: JWTProvider, session_factory) -> None:
        self.provider = provider
        self._session_factory = session_factory
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._fetched_at = 0.0
        self._last_attempt = 0.0
        self._lock = asyncio.Lock()
        self.generation = 0  # bumps on every successful fetch that changed the set
        self._jwks_uri = provider.jwks_uri

    @property
    def ready(self) -> bool:
        return self._keys is not None and bool(self._kids)

    @property
    def kids(self) -> frozenset[str]:
        return self._kids

    def key_set(self) -> KeySet | None:
        return self._keys

    async def get(self, kid: str | None) -> KeySet:
        """The key set that holds `kid`, refetching once (rate-limited) when it is unknown."""
        if self._keys is not None and (kid is None or kid in self._kids):
            return self._keys
        now = time.monotonic()
        if self._keys is None or now - self._last_attempt >= self.provider.jwks_min_refetch_seconds:
            await self.refresh()
        if self._keys is None:
            raise JWKSUnavailable(self.provider.id)
        return self._keys

    async def refresh(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._keys is not None and now - self._last_attempt < min(1.0, self.provider.jwks_min_refetch_seconds):
                return  # another task just refreshed
            self._last_attempt = now
            try:
                document = await self._fetch()
                keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - any failure keeps the last good keys
                log.warning("jwks refresh failed for provider %s: %s", self.provider.id, exc)
                return
            kids = frozenset(k.kid for k in keys.keys if k.kid)
            if kids != self._kids:
                self.generation += 1
                log.info("jwks for provider %s now holds kids %s", self.provider.id, sorted(kids))
            self._keys, self._kids, self._fetched_at = keys, kids, now

    async def run_periodic(self) -> None:
        while True:
            await asyncio.sleep(self.provider.jwks_refresh_seconds)
            await self.refresh()

    async def _fetch(self) -> dict[str, Any]:
        provider = self.provider
        if provider.jwks_file is not None:
            data = provider.jwks_file.read_bytes()
            return _public_only(orjson.loads(data))
        if provider.discovery and self._jwks_uri is None:
            meta = await self._get_json(provider.issuer.rstrip("/") + "/.well-known/openid-configuration")
            if meta.get("issuer") != provider.issuer:
                raise ValueError(f"discovery issuer {meta.get('issuer')!r} != configured {provider.issuer!r}")
            if not isinstance(meta.get("jwks_uri"), str):
                raise ValueError("discovery document has no jwks_uri")
            self._jwks_uri = meta["jwks_uri"]
        assert self._jwks_uri is not None  # set by settings validation or discovery above
        return _public_only(await self._get_json(self._jwks_uri))

    async def _get_json(self, url: str) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self.provider.http_timeout_seconds)
        session: aiohttp.ClientSession = self._session_factory()
        async with session.get(url, timeout=timeout, allow_redirects=False) as resp:
            if resp.status != 200:
                raise ValueError(f"GET {url} answered {resp.status}")
            body = await read_limited(resp, _MAX_JWKS_BYTES)
            document = orjson.loads(body)
            if not isinstance(document, dict):
                raise ValueError(f"GET {url}: not a JSON object")
            return document


def _public_only(document: dict[str, Any]) -> dict[str, Any]:
    """Drop symmetric keys and private parts: an issuer's JWKS verifies, it never signs here."""
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise ValueError("JWKS has no 'keys' list")
    private = {"d", "p", "q", "dp", "dq", "qi", "k"}
    clean = [
        {k: v for k, v in key.items() if k not in private}
        for key in keys
        if isinstance(key, dict) and key.get("kty") in ("RSA", "EC", "OKP")
    ]
    return {"keys": clean}
