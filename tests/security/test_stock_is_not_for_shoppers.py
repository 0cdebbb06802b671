"""Stock is not for shoppers: holding, selling or giving back stock is the checkout's
business (the service identity), never a shopper's.

The attack (issue 14, item 2): a shopper reserved a variant's whole stock through the
gateway for a day, then committed the reservation, and stock on hand went to 0 with no
order and no payment. Every test here makes a variant of its own, so the stock it measures
moves only by what the test does.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from services.order.saga import reservation_id
from tests.shop import Shop, Shopper
from tests.shop import service_headers as shop_service_headers

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

A_DAY = 86_400


def stocked_variant(shop: Shop, stock: int = 5) -> dict[str, Any]:
    """A new product with one EUR variant of ``stock`` units, made by the admin."""
    admin = shop.admin()
    slug = f"sec-stock-{uuid.uuid4().hex[:10]}"
    category = shop.api.post("/categories", headers=admin.auth,
                             json={"slug": slug, "name": "Stock test"})
    assert category.status_code == 201, category.text
    made = shop.api.post("/products", headers=admin.auth, json={
        "category": slug, "name": "Limited edition lamp",
        "variants": [{"sku": f"SEC-{uuid.uuid4().hex[:12]}",
                      "price": {"amount": 4200, "currency": "EUR"}, "stock": stock}]})
    assert made.status_code == 201, made.text
    variant = made.json()["variants"][0]
    return {**variant, "product_id": made.json()["id"]}


def stock_of(shop: Shop, variant: dict[str, Any]) -> dict[str, int]:
    return shop.variant(variant["product_id"], variant["id"])["stock"]  # type: ignore[no-any-return]


def service_headers(shop: Shop) -> dict[str, str]:
    """What the order service sends the product service: its identity token (subject
    ``service:order``, the ``service`` role, audience ``product``), signed with the order
    service's own key from the shop's data folder."""
    return shop_service_headers(shop, "order", "product")


def product_service(shop: Shop) -> httpx.Client:
    """The product service itself, past the gateway."""
    return httpx.Client(base_url=shop.service_url("product"), timeout=30)


def whole_stock(variant: dict[str, Any], rid: str, ttl: int = A_DAY) -> dict[str, Any]:
    return {"id": rid, "ttl_seconds": ttl,
            "lines": [{"variant_id": variant["id"],
                       "quantity": variant["stock"]["available"]}]}


def refused(response: httpx.Response) -> bool:
    return response.status_code in (401, 403, 404)


def test_a_shopper_cannot_hold_or_sell_stock_through_the_gateway(shop: Shop) -> None:
    variant = stocked_variant(shop)
    before = stock_of(shop, variant)
    shopper = shop.register()
    rid = str(uuid.uuid4())

    reserve = shop.api.post("/inventory/reservations", headers=shopper.auth,
                            json=whole_stock(variant, rid))
    commit = shop.api.post(f"/inventory/reservations/{rid}/commit", headers=shopper.auth)
    read = shop.api.get(f"/inventory/reservations/{rid}", headers=shopper.auth)

    assert refused(reserve), reserve.text
    assert refused(commit), commit.text
    assert refused(read), read.text
    assert stock_of(shop, variant) == before == {"on_hand": 5, "reserved": 0, "available": 5}


def test_the_product_service_itself_refuses_a_shopper(shop: Shop) -> None:
    """Not only the gateway: a shopper's token sent straight to the product service."""
    variant = stocked_variant(shop)
    before = stock_of(shop, variant)
    shopper = shop.register()
    rid = str(uuid.uuid4())

    with product_service(shop) as product:
        reserve = product.post("/inventory/reservations", headers=shopper.auth,
                               json=whole_stock(variant, rid))
        commit = product.post(f"/inventory/reservations/{rid}/commit", headers=shopper.auth)
        release = product.post(f"/inventory/reservations/{rid}/release",
                               headers=shopper.auth)
        read = product.get(f"/inventory/reservations/{rid}", headers=shopper.auth)

    for response in (reserve, commit, release, read):
        assert (response.status_code, response.json()["code"]) == (403, "missing_role"), (
            response.text)
    assert stock_of(shop, variant) == before


def _checkout_reservation(shop: Shop, variant: dict[str, Any], quantity: int) -> str:
    """A reservation as the order service makes one for a checkout (its id derived from
    the order's), held by the service identity."""
    rid = str(reservation_id(str(uuid.uuid4())))
    with product_service(shop) as product:
        made = product.post("/inventory/reservations", headers=service_headers(shop), json={
            "id": rid, "lines": [{"variant_id": variant["id"], "quantity": quantity}]})
    assert made.status_code == 201, made.text
    return rid


def _settle_as(shop: Shop, shopper: Shopper, rid: str) -> list[httpx.Response]:
    with product_service(shop) as product:
        direct = [product.post(f"/inventory/reservations/{rid}/{action}",
                               headers=shopper.auth) for action in ("commit", "release")]
    through_gateway = [shop.api.post(f"/inventory/reservations/{rid}/{action}",
                                     headers=shopper.auth) for action in ("commit", "release")]
    return direct + through_gateway


def test_a_shopper_cannot_commit_or_release_a_checkout_s_reservation(shop: Shop) -> None:
    variant = stocked_variant(shop)
    rid = _checkout_reservation(shop, variant, quantity=2)
    held = stock_of(shop, variant)
    shopper = shop.register()

    direct_commit, direct_release, *gateway = _settle_as(shop, shopper, rid)

    for response in (direct_commit, direct_release):
        assert (response.status_code, response.json()["code"]) == (403, "missing_role"), (
            response.text)
    assert all(refused(response) for response in gateway), [r.text for r in gateway]
    assert stock_of(shop, variant) == held == {"on_hand": 5, "reserved": 2, "available": 3}
    with product_service(shop) as product:  # the checkout itself still may
        released = product.post(f"/inventory/reservations/{rid}/release",
                                headers=service_headers(shop))
    assert released.json()["status"] == "released", released.text
    assert stock_of(shop, variant) == {"on_hand": 5, "reserved": 0, "available": 5}


def test_even_the_checkout_cannot_hold_stock_for_long(shop: Shop) -> None:
    variant = stocked_variant(shop)
    before = stock_of(shop, variant)

    with product_service(shop) as product:
        day_long = product.post("/inventory/reservations", headers=service_headers(shop),
                                json=whole_stock(variant, str(uuid.uuid4())))

    assert (day_long.status_code, day_long.json()["code"]) == (422, "ttl_too_long"), (
        day_long.text)
    message = day_long.json()["message"]
    assert "ttl_seconds" in message and "at most" in message and str(A_DAY) in message
    assert day_long.json()["details"]["max_ttl_seconds"] < A_DAY
    assert stock_of(shop, variant) == before


def test_a_checkout_still_reserves_and_commits_the_stock(shop: Shop) -> None:
    variant = stocked_variant(shop, stock=5)
    shopper = shop.register()

    order = shop.place_order(shopper, variant["id"], quantity=2)
    done = shop.wait_for_order(shopper, order["id"], ("CONFIRMED", "CANCELLED"), timeout=120)

    assert done["status"] == "CONFIRMED", done
    assert stock_of(shop, variant) == {"on_hand": 3, "reserved": 0, "available": 3}


def test_the_admin_still_adjusts_stock(shop: Shop) -> None:
    variant = stocked_variant(shop, stock=5)
    admin = shop.admin()

    delivered = shop.api.post(
        f"/products/{variant['product_id']}/variants/{variant['id']}/stock",
        headers=admin.auth, json={"delta": 7})
    shopper_try = shop.api.post(
        f"/products/{variant['product_id']}/variants/{variant['id']}/stock",
        headers=shop.register().auth, json={"on_hand": 0})

    assert delivered.status_code == 200, delivered.text
    assert shopper_try.status_code == 403, shopper_try.text
    assert stock_of(shop, variant) == {"on_hand": 12, "reserved": 0, "available": 12}
