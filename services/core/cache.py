"""Redis cache-aside with invalidation that cannot be undone by a slow reader.

``get_or_load(key, loader)`` returns the cached value or calls ``loader`` and caches what it
returns; ``invalidate(key)`` drops it after a write commits. The classic race — a reader
loads the old row, the writer commits and invalidates, then the reader stores the old row
for a whole TTL — is closed with a fill lease: a reader takes a fresh lease token before it
loads and may store only while its token is still the current one; invalidation deletes
the lease, so a load that started before the write never lands.

Every lookup counts a hit or a miss (``cache_requests_total{cache,result}``), so the hit
rate is ``rate(hit) / rate(hit + miss)``. Redis being down never fails a read: the loader
answers and the error is counted.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.core.metrics import counter

log = logging.getLogger(__name__)

T = TypeVar("T")

CACHE_REQUESTS = counter("cache_requests_total", "Cache lookups by result (hit, miss)",
                         ["cache", "result"])
CACHE_ERRORS = counter("cache_errors_total", "Cache operations that failed (Redis down …)",
                       ["cache", "operation"])

# KEYS[1] value key, KEYS[2] lease key; ARGV[1] our token, ARGV[2] value, ARGV[3] TTL seconds.
_FILL_IF_LEASE_HELD = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""

LEASE_SECONDS = 30
_MISSING = object()
_UNAVAILABLE = object()  # Redis did not answer: do not try to fill either


class Cache:
    """Cache-aside for one kind of value (``name`` labels its metrics, e.g. ``product``)."""

    def __init__(self, redis: Redis, *, prefix: str, name: str = "default",
                 default_ttl: int = 3600) -> None:
        self.redis = redis
        self.prefix = prefix
        self.name = name
        self.default_ttl = default_ttl
        self._fill = redis.register_script(_FILL_IF_LEASE_HELD)
        self._hits = CACHE_REQUESTS.labels(name, "hit")
        self._misses = CACHE_REQUESTS.labels(name, "miss")

    def scoped(self, name: str, default_ttl: int | None = None) -> Cache:
        """A cache for another kind of value under ``<prefix><name>:``, labelled ``name``."""
        return Cache(self.redis, prefix=f"{self.prefix}{name}:", name=name,
                     default_ttl=default_ttl or self.default_ttl)

    def key(self, key: str) -> str:
        return self.prefix + key

    def _lease_key(self, key: str) -> str:
        return self.prefix + key + ":lease"

    async def get(self, key: str) -> Any:
        """The cached value, or None on a miss (counted either way)."""
        value = await self._get(key)
        return None if value is _MISSING or value is _UNAVAILABLE else value

    async def _get(self, key: str) -> Any:
        try:
            raw = await self.redis.get(self.key(key))
        except RedisError as exc:
            CACHE_ERRORS.labels(self.name, "get").inc()
            log.warning("cache get %s failed: %s", key, exc)
            self._misses.inc()
            return _UNAVAILABLE
        if raw is None:
            self._misses.inc()
            return _MISSING
        self._hits.inc()
        return orjson.loads(raw)

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        ttl: int | None = None,
        dump: Callable[[T], Any] = lambda value: value,
        load: Callable[[Any], T] = lambda value: value,
        cache_none: bool = False,
    ) -> T:
        """The value for ``key``: from Redis, or from ``loader`` (then cached).

        ``dump``/``load`` convert to and from JSON-able data (e.g. ``Model.model_dump`` and
        ``Model.model_validate``). ``None`` from the loader is not cached unless
        ``cache_none`` (useful against lookups of missing ids, with a short ``ttl``).
        """
        cached = await self._get(key)
        if cached is _UNAVAILABLE:
            return await loader()
        if cached is not _MISSING and (cached is not None or cache_none):
            return load(cached)
        token = await self._take_lease(key)
        value = await loader()
        if token is not None and (value is not None or cache_none):
            await self._store_if_lease_held(key, token, orjson.dumps(dump(value)),
                                            ttl or self.default_ttl)
        return value

    async def _take_lease(self, key: str) -> str | None:
        token = uuid.uuid4().hex
        try:
            await self.redis.set(self._lease_key(key), token, ex=LEASE_SECONDS)
        except RedisError as exc:
            CACHE_ERRORS.labels(self.name, "lease").inc()
            log.warning("cache lease %s failed: %s", key, exc)
            return None
        return token

    async def _store_if_lease_held(self, key: str, token: str, data: bytes, ttl: int) -> None:
        try:
            await self._fill(keys=[self.key(key), self._lease_key(key)], args=[token, data, ttl])
        except RedisError as exc:
            CACHE_ERRORS.labels(self.name, "set").inc()
            log.warning("cache fill %s failed: %s", key, exc)

    async def set(self, key: str, value: Any, *, ttl: int | None = None) -> None:
        """Write through (e.g. right after creating a row); drops any in-flight fill."""
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(self.key(key), orjson.dumps(value), ex=ttl or self.default_ttl)
                pipe.delete(self._lease_key(key))
                await pipe.execute()
        except RedisError as exc:
            CACHE_ERRORS.labels(self.name, "set").inc()
            log.warning("cache set %s failed: %s", key, exc)

    async def invalidate(self, *keys: str) -> None:
        """Drop ``keys`` and their fill leases. Call after the write commits.

        A Redis outage is logged and counted rather than raised: the write has committed and
        must not be reported as failed, and a Redis that lost its connection to us usually
        lost its data too.
        """
        if not keys:
            return
        names = [name for key in keys for name in (self.key(key), self._lease_key(key))]
        try:
            await self.redis.delete(*names)
        except RedisError as exc:
            CACHE_ERRORS.labels(self.name, "invalidate").inc()
            log.error("cache invalidation of %s failed; entries may be stale: %s", keys, exc)

    async def invalidate_prefix(self, prefix: str) -> int:
        """Drop every key starting with ``prefix`` (e.g. cached listing pages), by SCAN, never
        KEYS, so Redis is not blocked."""
        deleted = 0
        batch: list[bytes | str] = []
        async for name in self.redis.scan_iter(match=self._glob(prefix) + "*", count=500):
            batch.append(name)
            if len(batch) >= 500:
                deleted += await self.redis.delete(*batch)
                batch = []
        if batch:
            deleted += await self.redis.delete(*batch)
        return deleted

    def _glob(self, prefix: str) -> str:
        escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in self.prefix + prefix)
        return escaped
