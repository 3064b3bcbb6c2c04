"""Opaque bearer tokens, checked at the provider's OAuth 2.0 Token Introspection endpoint (RFC 7662).

https://www.rfc-editor.org/rfc/rfc7662

- The proxy authenticates to the endpoint as a confidential client (`client_secret_basic` or
  `client_secret_post`, from the provider's `client`).
- `active` must be the JSON boolean `true`; `exp` (when present) must be in the future; `aud`,
  `client_id` and `token_type` are checked against the authenticator's settings.
- Results are cached by token digest until the earlier of the token's `exp` and `cache_ttl_seconds`,
  so a revoked token stops working within the TTL. Inactive answers are never cached.
- The endpoint down, slow, refusing our client or answering garbage: 503 (`introspection_unavailable`),
  never a pass. `scope` lands in `Identity.scopes` through the provider's claim mapping.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Callable
from urllib.parse import quote_plus, urlencode

import aiohttp
import orjson

from ..context import RequestContext
from ..errors import AuthUnavailable, InvalidCredential
from ..outbound import ResponseTooLarge, read_limited
from ..settings import IntrospectionAuthenticatorSettings, JWTProvider
from .audience import check_audience
from .bearer_jwt import MAX_TOKEN_BYTES, bearer_token
from .identity import Identity
from .mapping import identity_from_claims

log = logging.getLogger("iam_proxy.introspection")

_MAX_RESPONSE_BYTES = 64 * 1024


class IntrospectionAuthenticator:
    challenge = 'Bearer realm="iam-proxy"'

    def __init__(self, name: str, settings: IntrospectionAuthenticatorSettings, provider: JWTProvider,
                 http_session: Callable[[], aiohttp.ClientSession], clock=time.time) -> None:
        if provider.client is None or provider.client.client_secret is None:
            raise ValueError(f"provider {provider.id} needs a confidential client for introspection")
        self.name = name
        self.settings = settings
        self.provider = provider
        self._client_id = provider.client.client_id
        self._client_secret = provider.client.client_secret
        self._http = http_session
        self._clock = clock
        self._endpoint = settings.endpoint
        self._cache: OrderedDict[bytes, tuple[Identity, float]] = OrderedDict()

    async def authenticate(self, ctx: RequestContext) -> Identity | None:
        token = bearer_token(ctx, self.settings.header)
        if token is None:
            return None
        ctx.access_token = token  # forwarded only on routes with pass_access_token (if it verifies)
        if self.settings.header != "authorization":
            ctx.consumed_headers.add(self.settings.header)
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidCredential("token_too_large", message="The bearer token is too large.")
        now = self._clock()
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            if now < cached[1]:
                self._cache.move_to_end(digest)
                return cached[0]
            del self._cache[digest]

        result = await self._introspect(token)
        identity, exp = self._check(result, now)
        until = now + self.settings.cache_ttl_seconds
        if exp is not None:
            until = min(until, float(exp))
        if self.settings.cache_entries > 0 and until > now:
            self._cache[digest] = (identity, until)
            if len(self._cache) > self.settings.cache_entries:
                self._cache.popitem(last=False)
        return identity

    def forget(self, match: Callable[[Identity], bool]) -> int:
        """Drop cached results whose identity matches (a security event named the subject)."""
        gone = [digest for digest, (identity, _) in self._cache.items() if match(identity)]
        for digest in gone:
            del self._cache[digest]
        return len(gone)

    def _check(self, result: dict[str, Any], now: float) -> tuple[Identity, int | None]:
        if result.get("active") is not True:
            raise InvalidCredential("token_inactive", message="The token is not active.")
        exp = result.get("exp")
        if exp is not None:
            if not isinstance(exp, int) or isinstance(exp, bool):
                raise InvalidCredential("token_malformed", message="The token's expiry is malformed.")
            if now >= exp:
                raise InvalidCredential("token_expired", message="The token has expired.")
        if self.settings.audiences:
            check_audience(result.get("aud"), self.settings.audiences)
        if self.settings.client_ids and result.get("client_id") not in self.settings.client_ids:
            raise InvalidCredential("client_not_allowed", message="The token was issued to a client not allowed here.")
        token_type = result.get("token_type")
        if token_type is not None and (not isinstance(token_type, str)
                                       or token_type.lower() not in {t.lower() for t in self.settings.token_types}):
            raise InvalidCredential("token_type_not_allowed", message="This kind of token is not accepted here.")
        iss = result.get("iss")
        if iss is not None and iss != self.provider.issuer:
            raise InvalidCredential("issuer_mismatch", message="The token's issuer is not accepted here.")
        identity = identity_from_claims(result, self.provider.claims, method="introspection",
                                        provider=self.provider.id)
        if not identity.sub:
            raise InvalidCredential("subject_missing", message="The token has no subject.")
        if identity.iss is None:
            identity = replace(identity, iss=self.provider.issuer)
        return identity, exp

    async def _introspect(self, token: str) -> dict[str, Any]:
        endpoint = await self._introspection_endpoint()
        form = {"token": token, "token_type_hint": "access_token"}
        auth = None
        if self.settings.auth_method == "client_secret_basic":
            auth = aiohttp.BasicAuth(quote_plus(self._client_id), quote_plus(self._client_secret.get_secret_value()))
        else:
            form.update(client_id=self._client_id, client_secret=self._client_secret.get_secret_value())
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        try:
            async with self._http().post(endpoint, data=urlencode(form), auth=auth, timeout=timeout,
                                         allow_redirects=False,
                                         headers={"content-type": "application/x-www-form-urlencoded",
                                                  "accept": "application/json"}) as resp:
                body = await read_limited(resp, _MAX_RESPONSE_BYTES)
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ResponseTooLarge) as exc:
            raise AuthUnavailable("introspection_unavailable",
                                  detail=f"{self.provider.id}: {type(exc).__name__}") from None
        if status != 200:
            # 401/403 here means the proxy's own client credentials are refused: our fault, not the caller's.
            raise AuthUnavailable("introspection_unavailable", detail=f"{self.provider.id}: endpoint answered {status}")
        try:
            result = orjson.loads(body)
        except orjson.JSONDecodeError:
            result = None
        if not isinstance(result, dict):
            raise AuthUnavailable("introspection_unavailable", detail=f"{self.provider.id}: response not an object")
        return result

    async def _introspection_endpoint(self) -> str:
        if self._endpoint is not None:
            return self._endpoint
        url = self.provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        try:
            async with self._http().get(url, timeout=timeout, allow_redirects=False) as resp:
                meta = orjson.loads(await read_limited(resp, _MAX_RESPONSE_BYTES)) if resp.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError, ResponseTooLarge) as exc:
            raise AuthUnavailable("introspection_unavailable",
                                  detail=f"{self.provider.id} discovery: {type(exc).__name__}") from None
        if not isinstance(meta, dict) or meta.get("issuer") != self.provider.issuer \
                or not isinstance(meta.get("introspection_endpoint"), str):
            raise AuthUnavailable("introspection_unavailable",
                                  detail=f"{self.provider.id}: discovery names no introspection_endpoint")
        self._endpoint = meta["introspection_endpoint"]
        return self._endpoint
