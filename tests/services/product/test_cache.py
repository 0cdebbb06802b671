"""Cache-aside for product reads: a hit after the first read, dropped by every write."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import Redis

from services.product.app import create_app
from tests.services.support import eventually, running

from .conftest import ProductService, product_settings, variant

if TYPE_CHECKING:
    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

_SAMPLE = re.compile(
    r'^cache_requests_total\{cache="product",result="(hit|miss)"\} ([0-9.e+]+)$', re.M)


async def cache_counts(service: ProductService) -> dict[str, float]:
    """Hits and misses of the product cache, as /metrics shows them."""
    metrics = (await service.client.get("/metrics")).text
    counts = {"hit": 0.0, "miss": 0.0}
    counts.update({result: float(value) for result, value in _SAMPLE.findall(metrics)})
    return counts


def cache_key(service: ProductService, product_id: str) -> str:
    return f"{service.settings.cache_key_prefix}product:{product_id}"


async def test_the_second_read_is_a_cache_hit(product_service: ProductService) -> None:
    await product_service.category("lamps")
    product = await product_service.product("lamps")
    before = await cache_counts(product_service)

    first = await product_service.client.get(f"/products/{product['id']}")
    second = await product_service.client.get(f"/products/{product['id']}")
    after = await cache_counts(product_service)

    assert first.json() == second.json() == product
    assert after["miss"] - before["miss"] == 1
    assert after["hit"] - before["hit"] == 1
    ttl = await product_service.redis.ttl(cache_key(product_service, product["id"]))
    assert 3500 < ttl <= 3600  # the reference's one hour


async def test_a_write_drops_the_cached_product(product_service: ProductService) -> None:
    client, admin = product_service.client, product_service.admin
    await product_service.category("desks")
    product = await product_service.product("desks", "Desk")
    pid, vid = product["id"], product["variants"][0]["id"]
    key = cache_key(product_service, pid)

    await client.get(f"/products/{pid}")
    assert await product_service.redis.exists(key)
    await client.patch(f"/products/{pid}", headers=admin, json={"name": "Standing Desk"})
    assert not await product_service.redis.exists(key)
    assert (await client.get(f"/products/{pid}")).json()["name"] == "Standing Desk"

    await client.put(f"/products/{pid}/variants/{vid}/price", headers=admin,
                     json={"amount": 1, "currency": "EUR"})
    priced = (await client.get(f"/products/{pid}")).json()
    assert priced["variants"][0]["price"]["amount"] == 1

    await client.post(f"/products/{pid}/variants", headers=admin, json=variant("DESK-2"))
    assert len((await client.get(f"/products/{pid}")).json()["variants"]) == 2


async def test_inventory_changes_drop_the_cached_product(
    product_service: ProductService,
) -> None:
    client = product_service.client
    await product_service.category("chairs")
    product = await product_service.product("chairs", variants=[variant(stock=4)])
    pid, vid = product["id"], product["variants"][0]["id"]

    async def stock() -> dict[str, int]:
        document = (await client.get(f"/products/{pid}")).json()
        return document["variants"][0]["stock"]  # type: ignore[no-any-return]

    assert await stock() == {"on_hand": 4, "reserved": 0, "available": 4}
    reservation = (await product_service.reserve([(vid, 3)])).json()
    assert await stock() == {"on_hand": 4, "reserved": 3, "available": 1}
    await client.post(f"/inventory/reservations/{reservation['id']}/commit",
                      headers=product_service.checkout)
    assert await stock() == {"on_hand": 1, "reserved": 0, "available": 1}
    await client.post(f"/products/{pid}/variants/{vid}/stock",
                      headers=product_service.admin, json={"on_hand": 9})
    assert await stock() == {"on_hand": 9, "reserved": 0, "available": 9}


async def test_a_write_through_one_instance_is_seen_by_another_within_a_second(
    product_database_url: str, redis_server: RedisServer, redis: Redis,
) -> None:
    # Two instances of the service on one database and one Redis, as two replicas are:
    # each keeps product documents in its own process, and a write through either one
    # must reach the other's copy (over Redis pub/sub), not wait for a TTL.
    settings = product_settings(product_database_url, redis_server.url)
    writer_app = create_app(settings)
    async with running(writer_app) as writer, running(create_app(settings)) as reader:
        first = ProductService(writer_app, writer, settings, redis)
        await first.category("sofas")
        product = await first.product("sofas", "Sofa", variants=[variant(stock=5)])
        pid, vid = product["id"], product["variants"][0]["id"]
        admin = first.admin

        async def read() -> dict[str, Any]:
            response = await reader.get(f"/products/{pid}")
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

        async def reader_sees(check: Callable[[dict[str, Any]], bool], what: str) -> None:
            async def seen() -> bool:
                return check(await read())

            await eventually(seen, within=1.0, what=what)

        assert (await read())["name"] == "Sofa"
        assert (await read())["name"] == "Sofa"  # now held in the reader's process
        await writer.patch(f"/products/{pid}", headers=admin, json={"name": "Corner Sofa"})
        await reader_sees(lambda p: p["name"] == "Corner Sofa", "the rename")

        await writer.put(f"/products/{pid}/variants/{vid}/price", headers=admin,
                         json={"amount": 777, "currency": "EUR"})
        await reader_sees(lambda p: p["variants"][0]["price"]["amount"] == 777, "the price")

        await writer.post(f"/products/{pid}/variants/{vid}/stock", headers=admin,
                          json={"on_hand": 9})
        await reader_sees(lambda p: p["variants"][0]["stock"]["on_hand"] == 9, "the stock")

        reserved = await first.reserve([(vid, 2)])
        assert reserved.status_code == 201, reserved.text
        await reader_sees(lambda p: p["variants"][0]["stock"]["reserved"] == 2,
                          "the reservation")

        await writer.post(f"/products/{pid}/variants", headers=admin, json=variant("SOFA-2"))
        await reader_sees(lambda p: len(p["variants"]) == 2, "the new variant")
