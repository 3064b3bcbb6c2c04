"""GCRA counters in Redis, shared by every replica: one EVALSHA per request, whatever the number
of limits that apply (see gcra.py for the algorithm)."""

from __future__ import annotations

import asyncio

from ..settings.ratelimit import RedisLimitStore
from .gcra import ON_TIME_MS, Counter, StoreUnavailable, Verdict

# KEYS: the counters; ARGV: interval and tolerance (ms) of each. Returns {allowed, wait_1, ahead_1, ...}
# with times in microseconds (Redis turns Lua numbers into integers). TATs are stored with 3 decimals
# because Lua's default number format keeps only 14 significant digits.
GCRA_LUA = """
local ON_TIME_MS = @ON_TIME_MS@
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local allowed, waits, tats = 1, {}, {}
for i = 1, #KEYS do
  local interval, tolerance = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat + interval
  waits[i] = tats[i] - tolerance - now
  if waits[i] <= ON_TIME_MS and waits[i] > 0 then waits[i] = 0 end
  if waits[i] > 0 then allowed = 0 end
end
local out = {allowed}
for i = 1, #KEYS do
  if allowed == 1 then
    redis.call('SET', KEYS[i], string.format('%.3f', tats[i]), 'PX', math.ceil(tats[i] - now) + 1)
  else
    tats[i] = tats[i] - tonumber(ARGV[2 * i - 1])
  end
  out[#out + 1] = math.floor(waits[i] * 1000)
  out[#out + 1] = math.floor((tats[i] - now) * 1000)
end
return out
""".replace("@ON_TIME_MS@", repr(ON_TIME_MS))


class RedisStore:
    """`up` turns false on the first failed call and true again when a health ping answers."""

    def __init__(self, settings: RedisLimitStore) -> None:
        import redis.asyncio as redis

        self._errors = (redis.RedisError, OSError, asyncio.TimeoutError)
        # Blocking pool: a burst waits for one of `max_connections` (within the timeout) instead of
        # opening a connection per request.
        secret = {"password": settings.password.get_secret_value()} if settings.password else {}
        pool = redis.BlockingConnectionPool.from_url(
            settings.url, max_connections=settings.max_connections, timeout=settings.timeout_seconds,
            socket_timeout=settings.timeout_seconds, socket_connect_timeout=settings.timeout_seconds, **secret)
        self._redis = redis.Redis(connection_pool=pool)
        self._script = self._redis.register_script(GCRA_LUA)
        self._timeout = settings.timeout_seconds
        self._prefix = settings.key_prefix
        self.up = True

    async def check(self, counters: list[Counter]) -> Verdict:
        if not self.up:  # until the health ping sees it back: no request waits for a dead store
            raise StoreUnavailable("redis: down at the last check")
        keys = [self._prefix + c.key for c in counters]
        args = [v for c in counters for v in (repr(c.interval_ms), repr(c.tolerance_ms))]
        try:
            reply = await asyncio.wait_for(self._script(keys=keys, args=args), self._timeout)
        except self._errors as exc:
            self.up = False
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from None
        self.up = True
        numbers = [int(v) / 1000 for v in reply[1:]]
        return Verdict(bool(reply[0]), tuple(numbers[0::2]), tuple(numbers[1::2]))

    async def ping(self) -> None:
        try:
            await asyncio.wait_for(self._redis.ping(), self._timeout)
        except self._errors:
            self.up = False
        else:
            self.up = True

    async def close(self) -> None:
        await self._redis.aclose()
