"""Catalog CRUD, listing filters and the events writes publish, on one database."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from tests.services.support import unique

from .conftest import ProductService, variant

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def outbox_types(service: ProductService) -> list[str]:
    database = service.app.state.runtime.database
    async with database.session() as session:
        rows = await session.execute(text("SELECT event_type FROM outbox ORDER BY seq"))
        return [row[0] for row in rows]


async def test_an_admin_creates_a_product_that_anyone_can_read(
    product_service: ProductService,
) -> None:
    await product_service.category("shoes")
    created = await product_service.product(
        "shoes", "Trail Runner", description="Grippy", attributes={"brand": "acme"},
        images=["https://img.example/1.png"],
        variants=[variant("TR-42", 8999, stock=3, attributes={"size": "42"}),
                  variant("TR-43", 8999, stock=0, attributes={"size": "43"})])

    read = await product_service.client.get(f"/products/{created['id']}")

    assert read.status_code == 200
    assert read.json() == created
    assert created["version"] == 1
    assert [(v["sku"], v["price"], v["stock"]) for v in created["variants"]] == [
        ("TR-42", {"amount": 8999, "currency": "EUR"},
         {"on_hand": 3, "reserved": 0, "available": 3}),
        ("TR-43", {"amount": 8999, "currency": "EUR"},
         {"on_hand": 0, "reserved": 0, "available": 0}),
    ]


async def test_catalog_writes_need_the_admin_role(product_service: ProductService) -> None:
    body = {"slug": "toys", "name": "Toys"}
    anonymous = await product_service.client.post("/categories", json=body)
    shopper = await product_service.client.post("/categories", json=body,
                                                headers=product_service.shopper)

    assert anonymous.status_code == 401
    assert shopper.status_code == 403
    assert shopper.json()["code"] == "missing_role"


async def test_a_sku_is_unique_across_the_catalog(product_service: ProductService) -> None:
    await product_service.category("books")
    await product_service.product("books", variants=[variant("BOOK-1")])

    again = await product_service.client.post("/products", headers=product_service.admin, json={
        "category": "books", "name": "Other", "variants": [variant("BOOK-1")]})

    assert again.status_code == 409
    assert again.json()["code"] == "sku_taken"
    assert again.json()["details"] == {"skus": ["BOOK-1"]}


async def test_a_product_needs_an_existing_category(product_service: ProductService) -> None:
    response = await product_service.client.post(
        "/products", headers=product_service.admin,
        json={"category": "nowhere", "name": "X", "variants": [variant()]})

    assert response.status_code == 422
    assert response.json()["code"] == "unknown_category"


async def test_updates_bump_the_version_and_deletes_remove_the_product(
    product_service: ProductService,
) -> None:
    client, admin = product_service.client, product_service.admin
    await product_service.category("garden")
    await product_service.category("tools")
    product = await product_service.product("garden", "Rake")
    pid = product["id"]

    patched = await client.patch(f"/products/{pid}", headers=admin,
                                 json={"name": "Leaf Rake", "category": "tools"})
    added = await client.post(f"/products/{pid}/variants", headers=admin,
                              json=variant("RAKE-XL", 2500))
    vid = next(v["id"] for v in added.json()["variants"] if v["sku"] == "RAKE-XL")
    renamed = await client.patch(f"/products/{pid}/variants/{vid}", headers=admin,
                                 json={"name": "Extra large", "attributes": {"size": "xl"}})
    removed = await client.delete(f"/products/{pid}/variants/{vid}", headers=admin)
    last = await client.delete(f"/products/{pid}/variants/{product['variants'][0]['id']}",
                               headers=admin)
    deleted = await client.delete(f"/products/{pid}", headers=admin)
    gone = await client.get(f"/products/{pid}")

    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["category"]) == ("Leaf Rake", "tools")
    assert patched.json()["version"] == 2
    assert added.status_code == 201 and added.json()["version"] == 3
    assert renamed.json()["variants"][1]["name"] == "Extra large"
    assert removed.status_code == 200 and len(removed.json()["variants"]) == 1
    assert last.status_code == 409 and last.json()["code"] == "last_variant"
    assert deleted.status_code == 204
    assert gone.status_code == 404
    # The deleted variants' SKUs are free again.
    await product_service.product("tools", variants=[variant("RAKE-XL")])


async def test_a_category_with_products_or_children_cannot_be_deleted(
    product_service: ProductService,
) -> None:
    client, admin = product_service.client, product_service.admin
    await product_service.category("home")
    await product_service.category("kitchen", parent="home")
    product = await product_service.product("kitchen")

    with_children = await client.delete("/categories/home", headers=admin)
    with_products = await client.delete("/categories/kitchen", headers=admin)
    cycle = await client.patch("/categories/home", headers=admin, json={"parent": "kitchen"})
    await client.delete(f"/products/{product['id']}", headers=admin)
    emptied = await client.delete("/categories/kitchen", headers=admin)

    assert with_children.status_code == 409
    assert with_products.status_code == 409
    assert cycle.status_code == 422 and cycle.json()["code"] == "category_cycle"
    assert emptied.status_code == 204
    assert [c["slug"] for c in (await client.get("/categories")).json()] == ["home"]


async def test_a_price_change_publishes_price_changed(product_service: ProductService) -> None:
    await product_service.category("audio")
    product = await product_service.product("audio", variants=[variant("HP-1", 5000)])
    vid = product["variants"][0]["id"]

    changed = await product_service.client.put(
        f"/products/{product['id']}/variants/{vid}/price", headers=product_service.admin,
        json={"amount": 4500, "currency": "EUR"})

    assert changed.json()["variants"][0]["price"] == {"amount": 4500, "currency": "EUR"}
    database = product_service.app.state.runtime.database
    async with database.session() as session:
        payload = (await session.execute(text(
            "SELECT envelope->'payload' FROM outbox WHERE event_type = 'price.changed'"
        ))).scalar_one()
    assert payload["old"] == {"amount": 5000, "currency": "EUR"}
    assert payload["new"] == {"amount": 4500, "currency": "EUR"}
    assert payload["sku"] == "HP-1"


async def test_every_write_leaves_its_event_in_the_outbox_and_on_the_bus(
    product_service: ProductService,
) -> None:
    client, admin = product_service.client, product_service.admin
    await product_service.category("games")
    product = await product_service.product("games", variants=[variant(stock=5)])
    pid, vid = product["id"], product["variants"][0]["id"]
    await client.patch(f"/products/{pid}", headers=admin, json={"name": "Chess"})
    await client.post(f"/products/{pid}/variants/{vid}/stock", headers=admin,
                      json={"delta": 5, "reason": "delivery"})
    reservation = (await product_service.reserve([(vid, 2)])).json()
    await client.post(f"/inventory/reservations/{reservation['id']}/commit",
                      headers=product_service.checkout)
    await client.delete(f"/products/{pid}", headers=admin)

    assert await outbox_types(product_service) == [
        "product.created", "product.updated", "stock.changed", "inventory.reserved",
        "stock.changed", "inventory.committed", "stock.changed", "product.deleted"]

    stream = product_service.settings.event_topic_prefix + "product.events"

    async def on_bus() -> list[Any]:
        return await product_service.redis.xrange(stream)

    from tests.services.support import eventually

    async def all_published() -> bool:
        return len(await on_bus()) == 8

    await eventually(all_published, what="the outbox to be relayed")


async def listing(service: ProductService, **params: Any) -> list[str]:
    response = await service.client.get("/products", params=params)
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


async def test_listing_filters_by_category_price_attributes_text_and_stock(
    product_service: ProductService,
) -> None:
    s = product_service
    await s.category("phones")
    await s.category("cases")
    await s.product("phones", "Pixel Nine", attributes={"brand": "gugl"},
                    variants=[variant(amount=79900, attributes={"color": "black"}, stock=0)])
    await s.product("phones", "Fon Mini", attributes={"brand": "fon"},
                    variants=[variant(amount=29900, attributes={"color": "red"}),
                              variant(amount=34900, attributes={"color": "blue"})])
    await s.product("cases", "Pixel Case", attributes={"brand": "gugl"},
                    variants=[variant(amount=1999, currency="USD",
                                      attributes={"color": "red"})])

    assert await listing(s) == ["Pixel Case", "Fon Mini", "Pixel Nine"]
    assert await listing(s, category="phones") == ["Fon Mini", "Pixel Nine"]
    assert await listing(s, category=["phones", "cases"], sort="name") == [
        "Fon Mini", "Pixel Case", "Pixel Nine"]
    assert await listing(s, min_price=30000, max_price=80000, sort="price_asc") == [
        "Fon Mini", "Pixel Nine"]
    assert await listing(s, max_price=2000, currency="EUR") == []
    assert await listing(s, max_price=2000, currency="USD") == ["Pixel Case"]
    assert await listing(s, attr="brand:gugl", sort="oldest") == ["Pixel Nine", "Pixel Case"]
    assert await listing(s, attr="color:red") == ["Pixel Case", "Fon Mini"]
    assert await listing(s, attr=["color:red", "brand:fon"]) == ["Fon Mini"]
    assert await listing(s, q="pixel") == ["Pixel Case", "Pixel Nine"]
    assert await listing(s, q="%") == []
    assert await listing(s, in_stock=True, category="phones") == ["Fon Mini"]
    assert await listing(s, sort="price_desc") == ["Pixel Nine", "Fon Mini", "Pixel Case"]


async def test_pages_follow_the_cursor_without_gaps_or_repeats(
    product_service: ProductService,
) -> None:
    s = product_service
    await s.category("pens")
    names = [f"Pen {i:02d}" for i in range(23)]
    for i, name in enumerate(names):
        await s.product("pens", name, variants=[variant(amount=100 + (i * 7) % 5)])

    for sort in ("newest", "name", "price_asc", "price_desc"):
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"sort": sort, "limit": 5}
            if cursor:
                params["cursor"] = cursor
            page = (await s.client.get("/products", params=params)).json()
            seen += [item["name"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == names, sort
        assert len(seen) == len(set(seen))


async def test_bad_listing_input_gets_a_clear_client_error(
    product_service: ProductService,
) -> None:
    client = product_service.client
    cursor = await client.get("/products", params={"cursor": "not-a-cursor"})
    attr = await client.get("/products", params={"attr": "no-colon"})
    slug = await client.get("/products", params={"category": "Not A Slug"})
    unknown = await client.get(f"/products/{uuid.uuid4()}")

    assert (cursor.status_code, cursor.json()["code"]) == (400, "invalid_cursor")
    assert (attr.status_code, attr.json()["code"]) == (422, "invalid_filter")
    assert slug.status_code == 422
    assert unknown.status_code == 404


async def test_a_product_in_no_listing_is_not_found_by_name(
    product_service: ProductService,
) -> None:
    await product_service.category("misc")
    await product_service.product("misc", unique("Thing"))

    assert await listing(product_service, q="absent-name") == []
