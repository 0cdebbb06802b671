"""Reservations: the checkout's alone, never oversold under concurrency, idempotent, held
briefly and released at expiry."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from tests.services.support import eventually

from .conftest import ProductService, variant

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def stock_row(service: ProductService, variant_id: str) -> tuple[int, int]:
    database = service.app.state.runtime.database
    async with database.session() as session:
        row = (await session.execute(
            text("SELECT on_hand, reserved FROM variants WHERE id = :id"),
            {"id": uuid.UUID(variant_id)})).one()
    return row.on_hand, row.reserved


async def one_variant(service: ProductService, stock: int, sku: str | None = None) -> str:
    await service.category("stockroom")
    product = await service.product("stockroom", variants=[variant(sku, stock=stock)])
    return product["variants"][0]["id"]  # type: ignore[no-any-return]


async def test_200_concurrent_reservations_for_50_units_exactly_50_succeed(
    product_service: ProductService,
) -> None:
    vid = await one_variant(product_service, stock=50)
    lowest_available: list[int] = []
    done = asyncio.Event()

    async def watch_stock() -> None:
        while not done.is_set():
            on_hand, reserved = await stock_row(product_service, vid)
            lowest_available.append(on_hand - reserved)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch_stock())
    responses = await asyncio.gather(*(product_service.reserve([(vid, 1)], user=f"u{i}")
                                       for i in range(200)))
    done.set()
    await watcher

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 50
    assert statuses.count(409) == 150
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {
        "insufficient_stock"}
    assert await stock_row(product_service, vid) == (50, 50)
    assert min(lowest_available) >= 0
    document = (await product_service.client.get(
        f"/products/{(await product_id_of(product_service, vid))}")).json()
    assert document["variants"][0]["stock"] == {"on_hand": 50, "reserved": 50, "available": 0}


async def product_id_of(service: ProductService, variant_id: str) -> str:
    database = service.app.state.runtime.database
    async with database.session() as session:
        return str((await session.execute(text(
            "SELECT product_id FROM variants WHERE id = :id"),
            {"id": uuid.UUID(variant_id)})).scalar_one())


async def test_short_stock_is_a_409_naming_the_sku_and_what_is_left(
    product_service: ProductService,
) -> None:
    vid = await one_variant(product_service, stock=2, sku="MUG-1")

    response = await product_service.reserve([(vid, 3)])

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "insufficient_stock"
    assert "MUG-1: 3 requested, 2 available" in body["message"]
    assert body["details"] == [{"variant_id": vid, "sku": "MUG-1", "requested": 3,
                                "available": 2}]
    assert await stock_row(product_service, vid) == (2, 0)


async def test_a_reservation_is_all_or_nothing(product_service: ProductService) -> None:
    await product_service.category("bundle")
    product = await product_service.product("bundle", variants=[
        variant("A-1", stock=5), variant("B-1", stock=1)])
    a, b = (v["id"] for v in product["variants"])

    response = await product_service.reserve([(a, 2), (b, 2)])

    assert response.status_code == 409
    assert await stock_row(product_service, a) == (5, 0)
    assert await stock_row(product_service, b) == (1, 0)


async def test_reserve_is_idempotent_by_reservation_id(
    product_service: ProductService,
) -> None:
    vid = await one_variant(product_service, stock=5)
    rid = str(uuid.uuid4())

    first = await product_service.reserve([(vid, 2)], reservation_id=rid)
    retry = await product_service.reserve([(vid, 2)], reservation_id=rid)
    other_lines = await product_service.reserve([(vid, 3)], reservation_id=rid)
    other_user = await product_service.reserve([(vid, 2)], reservation_id=rid,
                                               user="service:intruder")
    racing = await asyncio.gather(*(product_service.reserve([(vid, 1)], reservation_id=r)
                                    for r in [str(uuid.uuid4())] * 5))

    assert first.status_code == 201
    assert retry.status_code == 200
    assert retry.json() == {**first.json(), "created_at": retry.json()["created_at"],
                            "updated_at": retry.json()["updated_at"]}
    assert (other_lines.status_code, other_lines.json()["code"]) == (409,
                                                                     "reservation_id_reused")
    assert (other_user.status_code, other_user.json()["code"]) == (409, "reservation_id_taken")
    assert sorted(r.status_code for r in racing) == [200, 200, 200, 200, 201]
    assert await stock_row(product_service, vid) == (5, 3)


async def test_commit_sells_and_release_returns_the_stock(
    product_service: ProductService,
) -> None:
    client, checkout = product_service.client, product_service.checkout
    vid = await one_variant(product_service, stock=10)
    sold = (await product_service.reserve([(vid, 3)])).json()["id"]
    returned = (await product_service.reserve([(vid, 4)])).json()["id"]

    commit = await client.post(f"/inventory/reservations/{sold}/commit", headers=checkout)
    commit_again = await client.post(f"/inventory/reservations/{sold}/commit", headers=checkout)
    release_sold = await client.post(f"/inventory/reservations/{sold}/release", headers=checkout)
    release = await client.post(f"/inventory/reservations/{returned}/release", headers=checkout)
    release_again = await client.post(f"/inventory/reservations/{returned}/release",
                                      headers=checkout)
    commit_released = await client.post(f"/inventory/reservations/{returned}/commit",
                                        headers=checkout)

    assert commit.json()["status"] == "committed"
    assert commit_again.status_code == 200 and commit_again.json()["status"] == "committed"
    assert (release_sold.status_code, release_sold.json()["code"]) == (
        409, "reservation_committed")
    assert release.json()["status"] == "released"
    assert release_again.status_code == 200
    assert (commit_released.status_code, commit_released.json()["code"]) == (
        409, "reservation_released")
    assert await stock_row(product_service, vid) == (7, 0)


async def test_a_reservation_is_private_to_its_service_and_admins(
    product_service: ProductService,
) -> None:
    client = product_service.client
    vid = await one_variant(product_service, stock=1)
    rid = (await product_service.reserve([(vid, 1)])).json()["id"]
    other_service = product_service.token("service:shipping", "service")

    own = await client.get(f"/inventory/reservations/{rid}", headers=product_service.checkout)
    admin = await client.get(f"/inventory/reservations/{rid}", headers=product_service.admin)
    other = await client.get(f"/inventory/reservations/{rid}", headers=other_service)
    other_release = await client.post(f"/inventory/reservations/{rid}/release",
                                      headers=other_service)
    admin_release = await client.post(f"/inventory/reservations/{rid}/release",
                                      headers=product_service.admin)
    anonymous = await client.get(f"/inventory/reservations/{rid}")

    assert own.status_code == admin.status_code == 200
    assert other.status_code == other_release.status_code == 404
    assert (admin_release.status_code, admin_release.json()["code"]) == (403, "missing_role")
    assert anonymous.status_code == 401
    assert await stock_row(product_service, vid) == (1, 1)


async def test_a_shopper_neither_holds_nor_settles_nor_reads_stock_reservations(
    product_service: ProductService,
) -> None:
    """The hole this closes: a shopper reserved a variant's whole stock for a day and then
    committed it, selling it to nobody."""
    client, shopper = product_service.client, product_service.shopper
    vid = await one_variant(product_service, stock=4)
    held = (await product_service.reserve([(vid, 1)])).json()["id"]
    own = str(uuid.uuid4())

    answers = [
        await product_service.reserve([(vid, 3)], reservation_id=own, user="shopper-1",
                                      roles=("customer",), ttl_seconds=60),
        await client.post(f"/inventory/reservations/{own}/commit", headers=shopper),
        await client.post(f"/inventory/reservations/{held}/commit", headers=shopper),
        await client.post(f"/inventory/reservations/{held}/release", headers=shopper),
        await client.get(f"/inventory/reservations/{held}", headers=shopper),
    ]

    assert [(a.status_code, a.json()["code"]) for a in answers] == [(403, "missing_role")] * 5
    assert await stock_row(product_service, vid) == (4, 1)


async def test_a_hold_longer_than_the_maximum_is_refused_and_changes_nothing(
    product_service: ProductService,
) -> None:
    longest = product_service.settings.reservation_max_ttl_seconds
    vid = await one_variant(product_service, stock=2)

    too_long = await product_service.reserve([(vid, 2)], ttl_seconds=longest + 1)
    longest_allowed = await product_service.reserve([(vid, 1)], ttl_seconds=longest)
    default = await product_service.reserve([(vid, 1)])

    assert too_long.status_code == 422
    assert too_long.json()["code"] == "ttl_too_long"
    assert too_long.json()["message"] == (
        f"ttl_seconds may be at most {longest} (a reservation holds stock only while a "
        f"checkout runs), not {longest + 1}")
    assert too_long.json()["details"] == {"ttl_seconds": longest + 1,
                                          "max_ttl_seconds": longest}
    assert longest_allowed.status_code == default.status_code == 201
    assert await stock_row(product_service, vid) == (2, 2)


async def test_an_expired_reservation_gives_its_stock_back(
    product_service: ProductService,
) -> None:
    vid = await one_variant(product_service, stock=3)
    rid = (await product_service.reserve([(vid, 3)], ttl_seconds=1)).json()["id"]
    assert await stock_row(product_service, vid) == (3, 3)

    async def released() -> bool:
        return await stock_row(product_service, vid) == (3, 0)

    await eventually(released, within=10, what="the sweeper to release the reservation")
    state = await product_service.client.get(f"/inventory/reservations/{rid}",
                                             headers=product_service.checkout)
    late_commit = await product_service.client.post(
        f"/inventory/reservations/{rid}/commit", headers=product_service.checkout)

    assert state.json()["status"] == "expired"
    assert (late_commit.status_code, late_commit.json()["code"]) == (409, "reservation_expired")
    assert (await product_service.reserve([(vid, 3)])).status_code == 201


async def test_stock_cannot_be_counted_below_what_is_reserved(
    product_service: ProductService,
) -> None:
    vid = await one_variant(product_service, stock=5)
    pid = await product_id_of(product_service, vid)
    await product_service.reserve([(vid, 4)])

    too_low = await product_service.client.post(
        f"/products/{pid}/variants/{vid}/stock", headers=product_service.admin,
        json={"on_hand": 3})
    write_off = await product_service.client.post(
        f"/products/{pid}/variants/{vid}/stock", headers=product_service.admin,
        json={"delta": -2})
    ok = await product_service.client.post(
        f"/products/{pid}/variants/{vid}/stock", headers=product_service.admin,
        json={"delta": -1})

    assert (too_low.status_code, too_low.json()["code"]) == (409, "stock_below_reserved")
    assert write_off.status_code == 409
    assert ok.json()["variants"][0]["stock"] == {"on_hand": 4, "reserved": 4, "available": 0}


async def test_a_variant_with_active_reservations_cannot_be_deleted(
    product_service: ProductService,
) -> None:
    await product_service.category("held")
    product = await product_service.product("held", variants=[variant(stock=2),
                                                                variant(stock=2)])
    pid, vid = product["id"], product["variants"][0]["id"]
    await product_service.reserve([(vid, 1)])

    variant_delete = await product_service.client.delete(
        f"/products/{pid}/variants/{vid}", headers=product_service.admin)
    product_delete = await product_service.client.delete(
        f"/products/{pid}", headers=product_service.admin)

    assert variant_delete.json()["code"] == "variant_has_reservations"
    assert product_delete.json()["code"] == "product_has_reservations"


async def test_unknown_variants_are_named(product_service: ProductService) -> None:
    missing = str(uuid.uuid4())
    response = await product_service.reserve([(missing, 1)])

    assert response.status_code == 422
    assert response.json()["details"] == {"variant_ids": [missing]}
