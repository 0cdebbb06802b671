"""Cache-aside on a real Redis: hits, misses, invalidation, and no stale fills."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis

from kommerce.testbed.redis import RedisServer
from services.core.cache import CACHE_REQUESTS, Cache, NearCache
from tests.services.support import eventually, unique

pytestmark = pytest.mark.redis


def _count(name: str, result: str) -> float:
    return CACHE_REQUESTS.labels(name, result)._value.get()


class Source:
    """A stand-in for the database: counts loads."""

    def __init__(self, value: object) -> None:
        self.value = value
        self.loads = 0

    async def load(self) -> object:
        self.loads += 1
        return self.value


@pytest.fixture
def cache(redis_client: Redis) -> Cache:
    return Cache(redis_client, prefix=unique("test") + ":", name=unique("cache"))


async def test_the_first_read_loads_and_the_second_is_a_hit(cache: Cache) -> None:
    source = Source({"id": "p-1", "price": 1999})

    first = await cache.get_or_load("product:p-1", source.load)
    second = await cache.get_or_load("product:p-1", source.load)

    assert first == second == {"id": "p-1", "price": 1999}
    assert source.loads == 1
    assert (_count(cache.name, "miss"), _count(cache.name, "hit")) == (1, 1)


async def test_invalidation_on_write_makes_the_next_read_load_again(cache: Cache) -> None:
    source = Source({"price": 1999})
    await cache.get_or_load("p", source.load)

    source.value = {"price": 2499}
    await cache.invalidate("p")

    assert await cache.get_or_load("p", source.load) == {"price": 2499}
    assert source.loads == 2


async def test_a_load_that_started_before_a_write_does_not_cache_the_old_value(
    cache: Cache,
) -> None:
    release = asyncio.Event()
    rows = {"price": 1999}

    async def slow_old_read() -> object:
        snapshot = dict(rows)
        await release.wait()
        return snapshot

    reader = asyncio.create_task(cache.get_or_load("p", slow_old_read))
    await asyncio.sleep(0.05)
    rows["price"] = 2499           # the write commits …
    await cache.invalidate("p")   # … and invalidates while the reader is still loading
    release.set()
    assert await reader == {"price": 1999}  # that reader answers with what it read

    async def fresh_read() -> object:
        return dict(rows)

    assert await cache.get_or_load("p", fresh_read) == {"price": 2499}


async def test_values_expire_after_their_ttl(cache: Cache) -> None:
    await cache.get_or_load("short", Source(1).load, ttl=1)

    assert 0 < await cache.redis.ttl(cache.key("short")) <= 1


async def test_none_is_not_cached_unless_asked(cache: Cache) -> None:
    source = Source(None)
    await cache.get_or_load("missing", source.load)
    await cache.get_or_load("missing", source.load)
    assert source.loads == 2

    negative = Source(None)
    await cache.get_or_load("missing-2", negative.load, cache_none=True, ttl=5)
    await cache.get_or_load("missing-2", negative.load, cache_none=True, ttl=5)
    assert negative.loads == 1


async def test_models_round_trip_through_dump_and_load(cache: Cache) -> None:
    from pydantic import BaseModel

    class Product(BaseModel):
        id: str
        price: int

    async def load() -> Product:
        return Product(id="p", price=5)

    for _ in range(2):
        product = await cache.get_or_load("m", load, dump=Product.model_dump,
                                          load=Product.model_validate)
        assert product == Product(id="p", price=5)


async def test_invalidate_prefix_drops_every_matching_key(cache: Cache) -> None:
    for page in range(3):
        await cache.set(f"list:electronics:{page}", [page])
    await cache.set("list:clothing:0", [0])

    assert await cache.invalidate_prefix("list:electronics:") == 3
    assert await cache.get("list:clothing:0") == [0]


async def test_keys_carry_the_prefix(cache: Cache) -> None:
    await cache.set("k", 1)

    assert await cache.redis.exists(cache.prefix + "k") == 1
    assert cache.scoped("inner").key("k") == cache.prefix + "inner:k"


async def test_reads_still_answer_when_redis_is_down(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    cache = Cache(client, prefix="down:", name=unique("cache"))
    try:
        source = Source({"ok": True})
        await cache.get_or_load("k", source.load)
        server.stop()

        assert await cache.get_or_load("k", source.load) == {"ok": True}
        await cache.invalidate("k")  # logged, not raised: the write already committed
        assert source.loads == 2
    finally:
        server.stop()
        await client.aclose()


# -- near copies in the process ----------------------------------------------------------------


@asynccontextmanager
async def near_cache(redis: Redis, channel: str) -> AsyncIterator[NearCache]:
    """A process's near cache with its invalidation listener running and subscribed."""
    near = NearCache(redis, channel)
    listener = asyncio.create_task(near.run())
    try:
        await asyncio.wait_for(near.subscribed.wait(), timeout=5)
        yield near
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


def process_cache(redis: Redis, near: NearCache, prefix: str, name: str) -> Cache:
    """What a service process builds: its root cache, and a scope that keeps near copies."""
    return Cache(redis, prefix=prefix, name=name, near=near).scoped("product", near=True)


async def test_a_near_copy_answers_without_asking_redis(redis_client: Redis) -> None:
    prefix, name = unique("near") + ":", unique("cache")
    async with near_cache(redis_client, prefix + "invalidations") as near:
        cache = process_cache(redis_client, near, prefix, name)
        source = Source({"price": 1999})
        await cache.get_or_load_json("p", source.load)
        await redis_client.delete(cache.key("p"))  # behind the cache's back, to prove it

        assert cache.peek_json("p") == b'{"price":1999}'
        assert await cache.get_or_load_json("p", source.load) == b'{"price":1999}'
        assert source.loads == 1


async def test_an_invalidation_in_one_process_drops_the_copies_of_the_others(
    redis_client: Redis,
) -> None:
    prefix, name = unique("near") + ":", unique("cache")
    channel = prefix + "invalidations"
    async with near_cache(redis_client, channel) as near_a, \
            near_cache(redis_client, channel) as near_b:
        writer = process_cache(redis_client, near_a, prefix, name)
        reader = process_cache(redis_client, near_b, prefix, name)
        source = Source({"price": 1999})
        assert await reader.get_or_load("p", source.load) == {"price": 1999}
        assert reader.peek_json("p") is not None

        source.value = {"price": 2499}
        await writer.invalidate("p")

        async def reader_sees_the_new_price() -> bool:
            return await reader.get_or_load("p", source.load) == {"price": 2499}

        await eventually(reader_sees_the_new_price, within=2, what="the other process's copy "
                         "dropped")


async def test_a_read_that_began_before_an_invalidation_keeps_no_copy(
    redis_client: Redis,
) -> None:
    async with near_cache(redis_client, unique("near")) as near:
        epoch = near.epoch("k")  # a read starts ...
        near.drop(["k"])  # ... an invalidation is applied while it waits on Redis ...
        near.store("k", b"old", epoch, 60)  # ... and what it read is now stale

        assert near.get("k") is None
        near.store("k", b"new", near.epoch("k"), 60)
        assert near.get("k") == b"new"


async def test_nothing_is_kept_in_process_unless_the_listener_is_subscribed(
    redis_client: Redis,
) -> None:
    near = NearCache(redis_client, unique("near"))
    near.store("k", b"v", near.epoch("k"), 60)
    assert near.get("k") is None  # not listening yet: invalidations could be missed

    listener = asyncio.create_task(near.run())
    await asyncio.wait_for(near.subscribed.wait(), timeout=5)
    near.store("k", b"v", near.epoch("k"), 60)
    assert near.get("k") == b"v"
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener

    assert near.get("k") is None and near.epoch("k") is None
