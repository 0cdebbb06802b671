"""Per-route, per-client rate limits in Redis, shared by every gateway replica.

The window **slides**: the count a request is judged by is this minute's requests plus the
previous minute's, weighted by how much of the previous minute still lies inside the last
60 seconds (Cloudflare's sliding-window counter). A fixed window would let a client send
twice its limit across a minute boundary; a log of timestamps would cost memory per request.
Two integers per client and route, updated by one Lua script so replicas never race, with
Redis's own clock so replicas with skewed clocks agree.

Redis being slow or down must not take the shop down with it: a check that fails or takes
longer than ``timeout`` lets the request through (Kong's ``fault_tolerant``), counted in
``gateway_rate_limit_errors_total`` and logged when it starts and stops happening.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.core.metrics import counter

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60

RATE_LIMITED = counter("gateway_rate_limited_total",
                       "Requests refused with 429, by route prefix", ["route"])
RATE_LIMIT_ERRORS = counter("gateway_rate_limit_errors_total",
                            "Rate-limit checks that failed or timed out (request let through)")

# KEYS[1]: the client's hash for one route; fields are window numbers, values counts.
# ARGV: window seconds, limit. Returns {allowed 0/1, remaining, retry-after seconds}.
_SLIDING_WINDOW = """
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local index = math.floor(now / window)
local current_field = string.format('%d', index)
local previous_field = string.format('%d', index - 1)
local current = tonumber(redis.call('HGET', KEYS[1], current_field) or '0')
local previous = tonumber(redis.call('HGET', KEYS[1], previous_field) or '0')
local elapsed = now - index * window
local estimate = previous * (window - elapsed) / window + current
if estimate + 1 <= limit then
  if current == 0 then
    -- first request of a new window: forget windows that can no longer count
    for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
      if field ~= previous_field then redis.call('HDEL', KEYS[1], field) end
    end
  end
  redis.call('HINCRBY', KEYS[1], current_field, 1)
  redis.call('EXPIRE', KEYS[1], window * 2)
  return {1, tostring(limit - estimate - 1), '0'}
end
local wait
if current + 1 <= limit and previous > 0 then
  -- only the previous window's fading share is in the way
  wait = (window - elapsed) - (limit - current - 1) * window / previous
else
  -- this window alone is full: wait for it to become the previous one and fade enough
  wait = (window - elapsed) + window * (1 - (limit - 1) / math.max(current, 1))
end
return {0, '0', tostring(wait)}
"""

# Identities become part of a Redis key; anything unusual (a forged X-Forwarded-For can be
# any string) is hashed so keys stay short and printable.
_PLAIN_IDENTITY = re.compile(r"^[A-Za-z0-9._:@-]{1,100}$")


@dataclass(frozen=True)
class RateDecision:
    """The verdict on one request, and what the response headers say about it."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_seconds: int = 0

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": str(self.remaining)}


class RateLimiter:
    """Counts requests per (route, client) in Redis under ``key_prefix``."""

    def __init__(self, redis: Redis, *, key_prefix: str, timeout_seconds: float,
                 window_seconds: int = WINDOW_SECONDS) -> None:
        self._redis = redis
        self._script = redis.register_script(_SLIDING_WINDOW)
        self.key_prefix = key_prefix
        self.timeout_seconds = timeout_seconds
        self.window_seconds = window_seconds
        self._failing = False

    def key(self, route: str, identity: str) -> str:
        if not _PLAIN_IDENTITY.match(identity):
            identity = "h:" + hashlib.blake2s(identity.encode(errors="replace")).hexdigest()
        return f"{self.key_prefix}ratelimit:{route}:{identity}"

    async def hit(self, route: str, identity: str, limit: int) -> RateDecision:
        """Count one request by ``identity`` on ``route`` and decide whether it may pass."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                allowed, remaining, wait = await self._script(
                    keys=[self.key(route, identity)], args=[self.window_seconds, limit])
        except (RedisError, OSError, TimeoutError) as exc:
            RATE_LIMIT_ERRORS.inc()
            if not self._failing:
                self._failing = True
                log.warning("rate limits cannot be checked, letting requests through: %s: %s",
                            type(exc).__name__, exc)
            return RateDecision(allowed=True, limit=limit, remaining=limit)
        if self._failing:
            self._failing = False
            log.info("rate limits are checked again")
        if int(allowed):
            return RateDecision(allowed=True, limit=limit,
                                remaining=max(0, math.floor(float(remaining))))
        RATE_LIMITED.labels(route).inc()
        return RateDecision(allowed=False, limit=limit, remaining=0,
                            retry_after_seconds=max(1, math.ceil(float(wait))))
