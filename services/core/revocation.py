"""The revocation list: access tokens that must stop working before they expire.

A signed access token is valid until its ``exp`` whatever happens to the account; this list
is how logout, a password change, a removed role and a reused refresh token take effect at
once. The user service writes it and every verifier (the gateway, and each service that
checks bearer tokens itself) reads it, in the Redis they share:

* ``<prefix>sid:<session>`` — a session (refresh-token family) has ended: every access
  token issued in it is refused. Kept for one access-token lifetime, after which all of
  them have expired anyway.
* ``<prefix>jti:<token id>`` — one access token (the one a logout was sent with), kept
  until that token's expiry.

Reads fail open within a short timeout (logged and counted): Redis being down must not take
the shop down, and a token is then no worse off than before this list existed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.core.metrics import counter

log = logging.getLogger(__name__)

CHECKS = counter("token_revocation_checks_total",
                 "Revocation-list checks by result (valid, revoked, unavailable)", ["result"])


class RevocationList:
    """Reads and writes of the list; one per process, over the service's Redis client."""

    def __init__(self, redis: Redis, *, prefix: str, timeout_seconds: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.timeout_seconds = timeout_seconds

    def _session_key(self, session_id: str) -> str:
        return f"{self.prefix}sid:{session_id}"

    def _token_key(self, token_id: str) -> str:
        return f"{self.prefix}jti:{token_id}"

    async def end_sessions(self, session_ids: Iterable[str], ttl_seconds: int) -> None:
        """Refuse every access token issued in these sessions from now on."""
        keys = [self._session_key(sid) for sid in session_ids]
        if keys:
            await self._write(keys, max(1, ttl_seconds))

    async def revoke_token(self, token_id: str, expires_at: int) -> None:
        """Refuse this one access token until it expires."""
        ttl = int(expires_at - time.time()) + 1
        if ttl > 0:
            await self._write([self._token_key(token_id)], ttl)

    async def _write(self, keys: list[str], ttl_seconds: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, b"1", ex=ttl_seconds)
            await pipe.execute()

    async def is_revoked(self, token_id: str, session_id: str | None) -> bool:
        keys = [self._token_key(token_id)]
        if session_id:
            keys.append(self._session_key(session_id))
        try:
            async with asyncio.timeout(self.timeout_seconds):
                found = int(await self.redis.exists(*keys))
        except (TimeoutError, RedisError, OSError) as exc:
            CHECKS.labels("unavailable").inc()
            log.warning("revocation list unavailable (%r); token %s let through",
                        exc, token_id)
            return False
        CHECKS.labels("revoked" if found else "valid").inc()
        return found > 0
