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

A cache can also keep a **near copy** in the process (:class:`NearCache`, opt-in per cache
with ``scoped(..., near=True)``): the JSON bytes of recent entries, so a hot read costs no
Redis round trip at all — with redis.asyncio a GET costs more CPU than the rest of a cached
request. Invalidation stays correct across processes: ``invalidate`` (and ``set`` and
``invalidate_prefix``) publishes the keys on a Redis channel every process of the service
listens to, each drops its copies, and a copy is only ever stored if no invalidation of
its key arrived since the read that produced it began (per-key-bucket epochs). Copies are
served only while the subscription is live (a reconnect drops them all, since messages
may have been missed) and live at most ``near_ttl`` seconds even so.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar, cast

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


class _Absent(enum.Enum):
    """What :meth:`Cache._lookup` answers instead of an entry's bytes."""

    MISSING = enum.auto()
    UNAVAILABLE = enum.auto()  # Redis did not answer: do not try to fill either


_MISSING: Final = _Absent.MISSING
_UNAVAILABLE: Final = _Absent.UNAVAILABLE


_EPOCH_BUCKETS = 1024  # a power of two: a key's bucket is ``hash(key) & (_EPOCH_BUCKETS - 1)``


class NearCache:
    """In-process copies of cache entries (their JSON bytes), kept coherent across the
    service's processes by a Redis pub/sub channel of invalidated keys.

    One per process and Redis prefix, shared by every :class:`Cache` scope that opts in
    (keys are full Redis keys, so scopes cannot collide). :meth:`run` is the listener; until
    it has subscribed, and whenever it is reconnecting, nothing is served or stored.

    Why epochs: a read that fetched a value from Redis (or the database) just before another
    process invalidated it must not store that value after the invalidation was applied
    here. Each read notes the epoch of its key's bucket before it starts; applying an
    invalidation bumps the bucket; :meth:`store` refuses a copy whose epoch moved on.
    """

    def __init__(self, redis: Redis, channel: str, *, max_entries: int = 10_000,
                 ttl_seconds: float = 30.0) -> None:
        self.redis = redis
        self.channel = channel
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._entries: dict[str, tuple[bytes, float]] = {}
        self._epochs = [0] * _EPOCH_BUCKETS
        self._listening = False
        self.subscribed = asyncio.Event()

    # -- reads -------------------------------------------------------------------------------

    def epoch(self, key: str) -> int | None:
        """The key's epoch to hand back to :meth:`store`, or None while not listening."""
        if not self._listening:
            return None
        return self._epochs[hash(key) & (_EPOCH_BUCKETS - 1)]

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] < time.monotonic() or not self._listening:
            self._entries.pop(key, None)
            return None
        return entry[0]

    def store(self, key: str, raw: bytes, epoch: int | None, ttl_seconds: float) -> None:
        """Keep ``raw`` for ``key`` unless the key was invalidated since ``epoch``."""
        if (epoch is None or not self._listening
                or self._epochs[hash(key) & (_EPOCH_BUCKETS - 1)] != epoch):
            return
        entries = self._entries
        if key not in entries and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]  # the oldest insertion: cheap, good enough
        entries[key] = (raw, time.monotonic() + min(ttl_seconds, self.ttl_seconds))

    # -- invalidation ------------------------------------------------------------------------

    def drop(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._epochs[hash(key) & (_EPOCH_BUCKETS - 1)] += 1
            self._entries.pop(key, None)

    def drop_prefix(self, prefix: str) -> None:
        self._bump_all()
        for key in [key for key in self._entries if key.startswith(prefix)]:
            del self._entries[key]

    def clear(self) -> None:
        self._bump_all()
        self._entries.clear()

    def _bump_all(self) -> None:
        self._epochs = [epoch + 1 for epoch in self._epochs]

    async def publish(self, *, keys: Iterable[str] = (), prefix: str | None = None) -> None:
        """Drop here at once, then tell the other processes (after the Redis change, so a
        process that reads Redis after the message sees the new state)."""
        keys = list(keys)
        self.drop(keys)
        if prefix is not None:
            self.drop_prefix(prefix)
        message = orjson.dumps({"keys": keys, "prefix": prefix})
        try:
            await self.redis.publish(self.channel, message)
        except RedisError as exc:
            # The other processes' copies expire within ttl_seconds; nothing better to do.
            log.error("near-cache invalidation of %s could not be published: %s", keys, exc)

    def _apply(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            self.drop(message["keys"])
            if message.get("prefix") is not None:
                self.drop_prefix(message["prefix"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed near-cache invalidation: %r", data[:200])
            self.clear()

    # -- the listener ------------------------------------------------------------------------

    async def run(self) -> None:
        """Listen for invalidations until cancelled, reconnecting with a back-off; copies
        are served only while subscribed."""
        failures = 0
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    kind = message["type"]
                    if kind == "message":
                        self._apply(message["data"])
                    elif kind == "subscribe":
                        # (Re)subscribed: what was sent while we were away is lost.
                        self.clear()
                        self._listening = True
                        self.subscribed.set()
                        failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                log.warning("near-cache invalidation listener lost Redis: %s", exc)
            finally:
                self._listening = False
                self.subscribed.clear()
                self.clear()
                # PubSub.aclose has no annotations; typed here, as redis documents it.
                aclose: Callable[[], Awaitable[None]] = pubsub.aclose
                await asyncio.shield(aclose())
            await asyncio.sleep(min(5.0, 0.1 * 2 ** min(failures, 6)))


class Cache:
    """Cache-aside for one kind of value (``name`` labels its metrics, e.g. ``product``)."""

    def __init__(self, redis: Redis, *, prefix: str, name: str = "default",
                 default_ttl: int = 3600, near: NearCache | None = None,
                 use_near: bool = False) -> None:
        self.redis = redis
        self.prefix = prefix
        self.name = name
        self.default_ttl = default_ttl
        # ``near`` is the process's near cache, handed on to scopes; ``self.near`` is set
        # only where it is used (opt-in, see ``scoped``).
        self._near_cache = near
        self.near = near if use_near else None
        self._fill = redis.register_script(_FILL_IF_LEASE_HELD)
        self._hits = CACHE_REQUESTS.labels(name, "hit")
        self._misses = CACHE_REQUESTS.labels(name, "miss")

    def scoped(self, name: str, default_ttl: int | None = None, *, near: bool = False) -> Cache:
        """A cache for another kind of value under ``<prefix><name>:``, labelled ``name``.

        ``near`` keeps in-process copies of hot entries (when the app has a near cache).
        Only for values every change of which goes through :meth:`invalidate`, :meth:`set`
        or :meth:`invalidate_prefix` of this service, and whose freshness does not rest on a
        TTL shorter than the near cache's.
        """
        return Cache(self.redis, prefix=f"{self.prefix}{name}:", name=name,
                     default_ttl=default_ttl or self.default_ttl, near=self._near_cache,
                     use_near=near)

    def key(self, key: str) -> str:
        return self.prefix + key

    def _lease_key(self, key: str) -> str:
        return self.prefix + key + ":lease"

    async def get(self, key: str) -> Any:
        """The cached value, or None on a miss (counted either way)."""
        raw, _ = await self._lookup(key)
        return None if raw is _MISSING or raw is _UNAVAILABLE else orjson.loads(raw)

    async def _lookup(self, key: str) -> tuple[bytes | _Absent, int | None]:
        """The entry's JSON bytes (or ``_MISSING``/``_UNAVAILABLE``), and the near-cache
        epoch noted before asking Redis, for storing what is read or loaded next."""
        near = self.near
        epoch = None
        if near is not None:
            full_key = self.prefix + key
            raw = near.get(full_key)
            if raw is not None:
                self._hits.inc()
                return raw, None
            epoch = near.epoch(full_key)
        try:
            # The core's Redis clients leave replies undecoded: bytes, never str.
            raw = cast("bytes | None", await self.redis.get(self.prefix + key))
        except RedisError as exc:
            CACHE_ERRORS.labels(self.name, "get").inc()
            log.warning("cache get %s failed: %s", key, exc)
            self._misses.inc()
            return _UNAVAILABLE, None
        if raw is None:
            self._misses.inc()
            return _MISSING, epoch
        self._hits.inc()
        if near is not None:
            near.store(self.prefix + key, raw, epoch, self.default_ttl)
        return raw, epoch

    def peek_json(self, key: str) -> bytes | None:
        """The entry's JSON bytes if this process holds a near copy (counted as a hit),
        else None without asking Redis: for answering before any other work is done."""
        if self.near is None:
            return None
        raw = self.near.get(self.prefix + key)
        if raw is not None:
            self._hits.inc()
        return raw

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
        """The value for ``key``: from the cache, or from ``loader`` (then cached).

        ``dump``/``load`` convert to and from JSON-able data (e.g. ``Model.model_dump`` and
        ``Model.model_validate``). ``None`` from the loader is not cached unless
        ``cache_none`` (useful against lookups of missing ids, with a short ``ttl``).
        """
        raw, epoch = await self._lookup(key)
        if raw is _UNAVAILABLE:
            return await loader()
        if raw is not _MISSING:
            cached = orjson.loads(raw)
            if cached is not None or cache_none:
                return load(cached)
        value, _ = await self._load_and_fill(key, loader, epoch, ttl, dump, cache_none)
        return value

    async def get_or_load_json(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        ttl: int | None = None,
        dump: Callable[[T], Any] = lambda value: value,
    ) -> bytes | None:
        """Like :meth:`get_or_load`, but the JSON bytes as cached, or None when the loader
        found nothing: for a response sent as it is, without decoding and re-encoding it.
        (A missing value is not cached.)"""
        raw, epoch = await self._lookup(key)
        if raw is _UNAVAILABLE:
            value = await loader()
            return None if value is None else orjson.dumps(dump(value))
        if raw is not _MISSING and raw != b"null":
            return raw
        _, data = await self._load_and_fill(key, loader, epoch, ttl, dump, cache_none=False)
        return data

    async def _load_and_fill(self, key: str, loader: Callable[[], Awaitable[T]],
                             epoch: int | None, ttl: int | None, dump: Callable[[T], Any],
                             cache_none: bool) -> tuple[T, bytes | None]:
        """The loaded value and its JSON (None when nothing is cached), stored in Redis if
        our fill lease still holds, and then near if no invalidation arrived since
        ``epoch``."""
        token = await self._take_lease(key)
        value = await loader()
        if value is None and not cache_none:
            return value, None
        data = orjson.dumps(dump(value))
        if token is not None:
            ttl = ttl or self.default_ttl
            if await self._store_if_lease_held(key, token, data, ttl) and self.near is not None:
                self.near.store(self.prefix + key, data, epoch, ttl)
        return value, data

    async def _take_lease(self, key: str) -> str | None:
        token = uuid.uuid4().hex
        try:
            await self.redis.set(self._lease_key(key), token, ex=LEASE_SECONDS)
        except RedisError as exc:
            CACHE_ERRORS.labels(self.name, "lease").inc()
            log.warning("cache lease %s failed: %s", key, exc)
            return None
        return token

    async def _store_if_lease_held(self, key: str, token: str, data: bytes, ttl: int) -> bool:
        try:
            stored = await self._fill(keys=[self.key(key), self._lease_key(key)],
                                      args=[token, data, ttl])
        except RedisError as exc:
            CACHE_ERRORS.labels(self.name, "set").inc()
            log.warning("cache fill %s failed: %s", key, exc)
            return False
        return bool(stored)

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
        if self.near is not None:
            await self.near.publish(keys=[self.key(key)])

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
        if self.near is not None:
            await self.near.publish(keys=[self.key(key) for key in keys])

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
        if self.near is not None:
            await self.near.publish(prefix=self.key(prefix))
        return deleted

    def _glob(self, prefix: str) -> str:
        escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in self.prefix + prefix)
        return escaped
