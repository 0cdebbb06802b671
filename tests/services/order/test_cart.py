"""Carts in Redis: adds accumulate (even concurrently), prices come from the catalog and are
re-checked at checkout, a guest cart merges into the shopper's on login, and checking out
the cart empties it once the order exists."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.services.order.conftest import PRICE, Service
from tests.services.order.test_checkout import ADDRESS, settled
from tests.services.support import unique

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def add(service: Service, headers: dict[str, str], variant: uuid.UUID,
              quantity: int = 1, currency: str = "usd") -> Any:
    return await service.client.post("/cart/items", headers=headers, json={
        "variant_id": str(variant), "quantity": quantity, "currency": currency})


async def test_concurrent_adds_all_count_at_the_catalog_price(service: Service) -> None:
    headers, variant = service.auth(), uuid.uuid4()
    await asyncio.gather(*(add(service, headers, variant) for _ in range(10)))
    cart = (await service.client.get("/cart", headers=headers)).json()
    assert cart["lines"] == [{"variant_id": str(variant), "quantity": 10, "unit_price": PRICE}]
    assert cart["total"] == 10 * PRICE and cart["currency"] == "usd"


async def test_update_and_remove_lines(service: Service) -> None:
    headers, keep, drop = service.auth(), uuid.uuid4(), uuid.uuid4()
    await add(service, headers, keep)
    await add(service, headers, drop)
    await service.client.put(f"/cart/items/{keep}", headers=headers, json={"quantity": 4})
    cart = (await service.client.delete(f"/cart/items/{drop}", headers=headers)).json()
    assert [(line["variant_id"], line["quantity"]) for line in cart["lines"]] == [
        (str(keep), 4)]
    missing = await service.client.put(f"/cart/items/{uuid.uuid4()}", headers=headers,
                                       json={"quantity": 1})
    assert missing.status_code == 422


async def test_a_cart_keeps_one_currency(service: Service) -> None:
    headers = service.auth()
    await add(service, headers, uuid.uuid4())
    other = await add(service, headers, uuid.uuid4(), currency="eur")
    assert other.status_code in (409, 422)


async def test_guest_cart_merges_into_the_shoppers_on_login(service: Service) -> None:
    shared, guest_only = uuid.uuid4(), uuid.uuid4()
    first = await add(service, {}, shared, 2)
    token = first.headers["X-Cart-Token"]
    await add(service, {"X-Cart-Token": token}, guest_only, 1)
    user = service.auth()
    await add(service, user, shared, 3)
    merged = (await service.client.post("/cart/merge",
                                        headers={**user, "X-Cart-Token": token})).json()
    assert {line["variant_id"]: line["quantity"] for line in merged["lines"]} == {
        str(shared): 5, str(guest_only): 1}
    guest = (await service.client.get("/cart", headers={"X-Cart-Token": token})).json()
    assert guest["lines"] == []


async def test_checkout_refuses_when_a_price_moved_then_goes_through(
        service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    headers, variant = service.auth(), uuid.uuid4()
    await add(service, headers, variant, 2)
    original = service.world.prices

    async def raised(variant_ids: list[uuid.UUID], currency: str) -> dict[uuid.UUID, int]:
        return {v: p + 100 for v, p in (await original(variant_ids, currency)).items()}

    monkeypatch.setattr(service.world, "prices", raised)
    body = {"payment_method": "pm_card_visa", "shipping_address": ADDRESS}
    key = {"Idempotency-Key": unique("cart")}
    refused = await service.client.post("/cart/checkout", json=body,
                                        headers={**headers, **key})
    assert refused.status_code == 409 and refused.json()["code"] == "price_changed"
    cart = (await service.client.get("/cart", headers=headers)).json()
    assert cart["lines"][0]["unit_price"] == PRICE + 100
    placed = await service.client.post("/cart/checkout", json=body, headers={**headers, **key})
    assert placed.status_code == 202, placed.text
    assert placed.json()["total"] == 2 * (PRICE + 100)
    assert (await service.client.get("/cart", headers=headers)).json()["lines"] == []
    again = await service.client.post("/cart/checkout", json=body, headers={**headers, **key})
    assert again.status_code == 200 and again.json()["id"] == placed.json()["id"]
    await settled(service, headers, placed.json()["id"], "CONFIRMED")


async def test_empty_cart_checkout_is_a_client_error(service: Service) -> None:
    response = await service.client.post(
        "/cart/checkout", json={"payment_method": "pm_card_visa", "shipping_address": ADDRESS},
        headers={**service.auth(), "Idempotency-Key": "empty"})
    assert response.status_code == 422 and response.json()["code"] == "cart_empty"
