"""Brute-force limits on password checks, counted in Redis so every replica shares them.

Two fixed windows per attempt: one per account (stops guessing one user's password from a
botnet) and one per client address (stops one client spraying many accounts). An attempt
is counted *before* the password is checked and refunded when it succeeds, so concurrent
guesses cannot slip past the limit between check and count; when either counter is at its
limit the attempt is refused with 429 and ``Retry-After`` = the time left in that window,
without checking the password at all (a locked account stays locked even for the right
password, or the lock would be an oracle).

Email addresses are hashed in key names: Redis is not where personal data should pile up.
"""

from __future__ import annotations

import hashlib
import logging
import math

from redis.asyncio import Redis

from services.core.errors import TooManyRequests
from services.core.metrics import counter

log = logging.getLogger(__name__)

LOGIN_THROTTLED = counter("user_login_throttled_total",
                          "Password checks refused by the brute-force limits", ["scope"])

# KEYS: per-account key, per-address key. ARGV: their limits, window in ms.
# Returns 0 when the attempt was counted, else the ms until the fullest window ends,
# negated for the per-address window so the caller can say which limit applied.
_COUNT_ATTEMPT = """
local wait, scope = 0, 0
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= tonumber(ARGV[i]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then ttl = tonumber(ARGV[3]) end
    if ttl > wait then wait, scope = ttl, i end
  end
end
if wait > 0 then
  if scope == 2 then return -wait end
  return wait
end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[3]) end
end
return 0
"""

# KEYS: per-account key, per-address key. The account's slate is wiped; the address only
# gets this attempt back (other accounts' failures from it still count).
_REFUND_ATTEMPT = """
redis.call('DEL', KEYS[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
return 0
"""


class LoginThrottle:
    def __init__(self, redis: Redis, *, prefix: str, max_per_account: int,
                 max_per_address: int, window_seconds: int) -> None:
        self.prefix = prefix
        self.max_per_account = max_per_account
        self.max_per_address = max_per_address
        self.window_ms = window_seconds * 1000
        self._count = redis.register_script(_COUNT_ATTEMPT)
        self._refund = redis.register_script(_REFUND_ATTEMPT)

    def _keys(self, email: str, address: str) -> list[str]:
        digest = hashlib.sha256(email.encode()).hexdigest()[:32]
        return [f"{self.prefix}login:account:{digest}", f"{self.prefix}login:address:{address}"]

    async def attempt(self, email: str, address: str) -> None:
        """Count a password check for ``email`` from ``address``; 429 when over a limit."""
        result = int(await self._count(
            keys=self._keys(email, address),
            args=[self.max_per_account, self.max_per_address, self.window_ms]))
        if result == 0:
            return
        scope = "address" if result < 0 else "account"
        LOGIN_THROTTLED.labels(scope).inc()
        log.warning("password checks throttled (%s limit) from %s", scope, address)
        raise TooManyRequests(
            "too many failed sign-in attempts; wait before trying again",
            code="login_throttled", retry_after_seconds=math.ceil(abs(result) / 1000),
            details={"limit": scope})

    async def succeeded(self, email: str, address: str) -> None:
        """The password was right: forget the account's failures, refund the address."""
        await self._refund(keys=self._keys(email, address))
