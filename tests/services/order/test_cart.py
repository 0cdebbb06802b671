"""Carts in Redis: adds accumulate (even concurrently), prices come from the real catalog
(the product service, by variant id) and are re-checked at checkout, a cart keeps one
currency, a guest cart merges into the shopper's on login, and checking out the cart
empties it once the order exists."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.services.order.conftest import ADDRESS, PRICE, RealParticipants, Service
from tests.services.order.test_checkout import settled
from tests.services.support import unique

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.stripe]


async def add(service: Service, headers: dict[str, str], variant: str | uuid.UUID,
              quantity: int = 1, currency: str = "usd") -> Any:
    return await service.client.post("/cart/items", headers=headers, json={
        "variant_id": str(variant), "quantity": quantity, "currency": currency})


async def test_concurrent_adds_all_count_at_the_catalog_price(
        service: Service, real: RealParticipants) -> None:
    headers, [variant] = service.auth(), await real.variants()
    added = await asyncio.gather(*(add(service, headers, variant) for _ in range(10)))
    assert {r.status_code for r in added} == {200}
    cart = (await service.client.get("/cart", headers=headers)).json()
    assert cart["lines"] == [{"variant_id": variant, "quantity": 10, "unit_price": PRICE}]
    assert cart["total"] == 10 * PRICE and cart["currency"] == "usd"


async def test_an_item_the_catalog_does_not_have_is_refused(service: Service) -> None:
    response = await add(service, service.auth(), uuid.uuid4())
    assert (response.status_code, response.json()["code"]) == (422, "unknown_variant")


async def test_update_and_remove_lines(service: Service, real: RealParticipants) -> None:
    headers, (keep, drop) = service.auth(), await real.variants(2)
    await add(service, headers, keep)
    await add(service, headers, drop)
    await service.client.put(f"/cart/items/{keep}", headers=headers, json={"quantity": 4})
    cart = (await service.client.delete(f"/cart/items/{drop}", headers=headers)).json()
    assert [(line["variant_id"], line["quantity"]) for line in cart["lines"]] == [(keep, 4)]
    missing = await service.client.put(f"/cart/items/{uuid.uuid4()}", headers=headers,
                                       json={"quantity": 1})
    assert missing.status_code == 422


async def test_a_cart_keeps_one_currency(service: Service, real: RealParticipants) -> None:
    headers = service.auth()
    [dollars] = await real.variants()
    [euros] = await real.variants(currency="EUR")
    assert (await add(service, headers, dollars)).status_code == 200
    other = await add(service, headers, euros, currency="eur")
    assert (other.status_code, other.json()["code"]) == (409, "currency_mismatch")


async def test_guest_cart_merges_into_the_shoppers_on_login(
        service: Service, real: RealParticipants) -> None:
    shared, guest_only = await real.variants(2)
    first = await add(service, {}, shared, 2)
    token = first.headers["X-Cart-Token"]
    await add(service, {"X-Cart-Token": token}, guest_only, 1)
    user = service.auth()
    await add(service, user, shared, 3)
    merged = (await service.client.post("/cart/merge",
                                        headers={**user, "X-Cart-Token": token})).json()
    assert {line["variant_id"]: line["quantity"] for line in merged["lines"]} == {
        shared: 5, guest_only: 1}
    guest = (await service.client.get("/cart", headers={"X-Cart-Token": token})).json()
    assert guest["lines"] == []


async def test_checkout_refuses_when_a_price_moved_then_goes_through(
        service: Service, real: RealParticipants) -> None:
    headers, [variant] = service.auth(), await real.variants(stock=10)
    await add(service, headers, variant, 2)
    await real.set_price(variant, PRICE + 100)
    body = {"payment_method": "pm_card_visa", "shipping_address": ADDRESS}
    key = {"Idempotency-Key": unique("cart")}
    refused = await service.client.post("/cart/checkout", json=body,
                                        headers={**headers, **key})
    assert refused.status_code == 409 and refused.json()["code"] == "price_changed"
    assert refused.json()["details"] == [{"variant_id": variant, "was": PRICE,
                                          "now": PRICE + 100}]
    cart = (await service.client.get("/cart", headers=headers)).json()
    assert cart["lines"][0]["unit_price"] == PRICE + 100
    placed = await service.client.post("/cart/checkout", json=body, headers={**headers, **key})
    assert placed.status_code == 202, placed.text
    assert placed.json()["total"] == 2 * (PRICE + 100)
    assert (await service.client.get("/cart", headers=headers)).json()["lines"] == []
    again = await service.client.post("/cart/checkout", json=body, headers={**headers, **key})
    assert again.status_code == 200 and again.json()["id"] == placed.json()["id"]
    await settled(service, headers, placed.json()["id"], "CONFIRMED")
    assert await real.stock(variant) == {"on_hand": 8, "reserved": 0, "available": 8}


async def test_empty_cart_checkout_is_a_client_error(service: Service) -> None:
    response = await service.client.post(
        "/cart/checkout", json={"payment_method": "pm_card_visa", "shipping_address": ADDRESS},
        headers={**service.auth(), "Idempotency-Key": "empty"})
    assert response.status_code == 422 and response.json()["code"] == "cart_empty"
