"""Checkout across the real services, each its own process (product, payment on Stripe's
API via stripe-mock, shipping, order) on Kafka, PostgreSQL and Redis:

* a cart is priced by variant id from the product service, and a checkout re-checks the
  prices and refuses (refreshing the cart) when one moved;
* Stripe's test cards take their own paths through the Stripe backend: a declined card
  cancels the order and gives the stock back; a 3-D Secure card leaves the order waiting
  until Stripe's signed webhook says the shopper authenticated, and then it is confirmed;
  a shipment no carrier takes after the charge refunds the PaymentIntent at Stripe;
* after checkouts with Stripe's test cards, and card numbers typed into a shipping address
  (refused) or a URL path or query string, no card number (PAN) is anywhere: not in any
  column of any table of any service's schema, not in Redis, not in any service's log, not
  in what was sent to Stripe.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kommerce.testbed.checkout_platform import (
    ADDRESS,
    CheckoutPlatform,
    StripeRecorder,
    checkout_body,
    checkout_platform,
    signed_webhook,
    stock_catalog,
)
from services.core.pci import find_pans, luhn_valid
from services.order.saga import reservation_id
from tests.services.support import eventually

if TYPE_CHECKING:
    from kommerce.testbed.kafka import KafkaBroker
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer
    from kommerce.testbed.stripe_mock import StripeMock

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.kafka, pytest.mark.stripe]

TEST_CARDS = ["pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_visa_debit"]


@pytest.fixture(scope="module")
def recorder(stripe_mock: StripeMock) -> Iterator[StripeRecorder]:
    with StripeRecorder(stripe_mock.api_base).serving() as serving:
        yield serving


@pytest.fixture(scope="module")
def platform(postgres_server: PostgresServer, redis_server: RedisServer,
             kafka_broker: KafkaBroker, recorder: StripeRecorder,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckoutPlatform]:
    with checkout_platform(
            database_url=postgres_server.create_database("checkout_platform"),
            redis_url=redis_server.url, kafka_bootstrap=kafka_broker.bootstrap_servers,
            stripe_api_base=recorder.url,
            log_dir=tmp_path_factory.mktemp("platform") / "logs") as started:
        yield started


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(timeout=15) as http:
        yield http


async def wait_for_status(client: httpx.AsyncClient, platform: CheckoutPlatform,
                          headers: dict[str, str], order_id: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def final() -> bool:
        response = await client.get(f"{platform['order'].url}/orders/{order_id}",
                                    headers=headers)
        seen.update(response.json())
        return seen.get("status") in ("CONFIRMED", "CANCELLED")

    await eventually(final, within=30, what=f"order {order_id} to finish")
    return seen


# -- pricing by variant id -------------------------------------------------------------------


async def test_a_cart_is_priced_by_variant_id_and_rechecked_at_checkout(
        platform: CheckoutPlatform, client: httpx.AsyncClient) -> None:
    catalog = await stock_catalog(client, platform, variants=2, stock=50, price=1250)
    first, second = catalog.variant_ids
    order_url = platform["order"].url
    shopper = platform.token(f"cart-{uuid.uuid4().hex[:6]}", "customer")

    added = await client.post(f"{order_url}/cart/items", headers=shopper, json={
        "variant_id": first, "quantity": 2, "currency": "usd"})
    assert added.status_code == 200, added.text
    assert added.json()["lines"] == [{"variant_id": first, "quantity": 2, "unit_price": 1250}]
    unknown = await client.post(f"{order_url}/cart/items", headers=shopper, json={
        "variant_id": str(uuid.uuid4()), "quantity": 1, "currency": "usd"})
    assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_variant")
    not_in_eur = await client.post(f"{order_url}/cart/items", headers=shopper, json={
        "variant_id": second, "quantity": 1, "currency": "eur"})
    assert (not_in_eur.status_code, not_in_eur.json()["code"]) == (422, "unknown_variant")

    repriced = await client.put(
        f"{platform['product'].url}/products/{catalog.product_id}/variants/{first}/price",
        headers=platform.token("admin-1", "admin"), json={"amount": 1400, "currency": "USD"})
    assert repriced.status_code == 200, repriced.text
    body = {"payment_method": "pm_card_visa", "shipping_address": ADDRESS}
    key = {"Idempotency-Key": f"cart-{uuid.uuid4().hex}"}
    refused = await client.post(f"{order_url}/cart/checkout", headers={**shopper, **key},
                                json=body)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "price_changed"
    assert refused.json()["details"] == [{"variant_id": first, "was": 1250, "now": 1400}]
    cart = (await client.get(f"{order_url}/cart", headers=shopper)).json()
    assert cart["lines"][0]["unit_price"] == 1400  # the snapshot was refreshed

    placed = await client.post(f"{order_url}/cart/checkout", headers={**shopper, **key},
                               json=body)
    assert placed.status_code == 202, placed.text
    assert placed.json()["total"] == 2 * 1400
    order = await wait_for_status(client, platform, shopper, placed.json()["id"])
    assert order["status"] == "CONFIRMED", order
    assert (await client.get(f"{order_url}/cart", headers=shopper)).json()["lines"] == []


# -- Stripe's test cards, each on its own path ------------------------------------------------


async def place_order(client: httpx.AsyncClient, platform: CheckoutPlatform,
                      headers: dict[str, str], variant_id: str, method: str,
                      quantity: int = 1) -> str:
    placed = await client.post(f"{platform['order'].url}/checkout",
                               json=checkout_body(variant_id, quantity, method),
                               headers={**headers, "Idempotency-Key": uuid.uuid4().hex})
    assert placed.status_code == 202, placed.text
    return str(placed.json()["id"])


async def stock_of(client: httpx.AsyncClient, platform: CheckoutPlatform,
                   variant_id: str) -> dict[str, int]:
    response = await client.get(f"{platform['product'].url}/variants/{variant_id}")
    assert response.status_code == 200, response.text
    return dict(response.json()["stock"])


async def payments_of(client: httpx.AsyncClient, platform: CheckoutPlatform,
                      order_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"{platform['payment'].url}/payments",
                                params={"order_id": order_id},
                                headers=platform.token("admin-1", "admin"))
    assert response.status_code == 200, response.text
    return list(response.json())


async def scalar(platform: CheckoutPlatform, sql: str, **params: object) -> Any:
    engine = create_async_engine(platform.database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar_one_or_none()
    finally:
        await engine.dispose()


async def reservation_status(platform: CheckoutPlatform, order_id: str) -> str | None:
    """The order's reservation as the product service keeps it (its own table)."""
    return await scalar(  # type: ignore[no-any-return]
        platform, f'SELECT status FROM "{platform.schemas["product"]}".reservations '
        "WHERE id = :id", id=reservation_id(order_id))


def only_intent(recorder: StripeRecorder, order_id: str) -> dict[str, Any]:
    """The one PaymentIntent the platform created for the order, as the platform saw it."""
    created = recorder.intents_for(order_id)
    assert len({c.idempotency_key for c in created}) == 1, created
    assert created[-1].status == 200, created[-1].answer
    return {**created[-1].answered, "metadata": created[-1].metadata}  # as Stripe keeps it


async def test_a_declined_card_cancels_the_order_and_gives_the_stock_back(
        platform: CheckoutPlatform, client: httpx.AsyncClient,
        recorder: StripeRecorder) -> None:
    catalog = await stock_catalog(client, platform, variants=1, stock=10)
    variant = catalog.variant_ids[0]
    shopper = platform.token(f"decline-{uuid.uuid4().hex[:6]}", "customer")
    order_id = await place_order(client, platform, shopper, variant,
                                 "pm_card_chargeDeclined", quantity=3)
    order = await wait_for_status(client, platform, shopper, order_id)
    assert order["status"] == "CANCELLED", order
    assert "declined" in order["reason"]
    assert [t["status"] for t in order["timeline"]] == [
        "PENDING", "INVENTORY_RESERVED", "CANCELLING", "CANCELLED"]
    # Stripe was asked, and its answer (stripe-mock's own) is what declined the order.
    assert only_intent(recorder, order_id)["status"] == "requires_payment_method"
    assert [p["status"] for p in await payments_of(client, platform, order_id)] == ["declined"]
    assert await reservation_status(platform, order_id) == "released"
    assert await stock_of(client, platform, variant) == {
        "on_hand": 10, "reserved": 0, "available": 10}


async def test_a_3d_secure_card_waits_for_the_shopper_then_stripes_webhook_confirms(
        platform: CheckoutPlatform, client: httpx.AsyncClient,
        recorder: StripeRecorder) -> None:
    catalog = await stock_catalog(client, platform, variants=1, stock=10)
    variant = catalog.variant_ids[0]
    shopper = platform.token(f"3ds-{uuid.uuid4().hex[:6]}", "customer")
    order_id = await place_order(client, platform, shopper, variant,
                                 "pm_card_threeDSecure2Required", quantity=2)

    async def asked_to_authenticate() -> bool:
        payments = await payments_of(client, platform, order_id)
        return [p["status"] for p in payments] == ["requires_action"]

    await eventually(asked_to_authenticate, within=30, what="the charge to need 3-D Secure")
    intent = only_intent(recorder, order_id)
    assert intent["status"] == "requires_action" and intent["next_action"]
    waiting = await scalar(platform, f'SELECT state FROM "{platform.schemas["order"]}".sagas '
                           "WHERE order_id = :id", id=uuid.UUID(order_id))
    assert waiting["state"] == "INVENTORY_RESERVED" and waiting["action_required"], waiting
    # Longer than a step may take (3 s here): a saga waiting for the shopper is not resent
    # or compensated, it waits.
    await asyncio.sleep(4)
    detail = (await client.get(f"{platform['order'].url}/orders/{order_id}",
                               headers=shopper)).json()
    assert detail["status"] == "INVENTORY_RESERVED", detail
    assert len(recorder.intents_for(order_id)) == 1
    assert await stock_of(client, platform, variant) == {
        "on_hand": 10, "reserved": 2, "available": 8}

    # The shopper authenticates in Stripe.js; Stripe tells the payment service, signed.
    body, headers = signed_webhook("payment_intent.succeeded", {
        **intent, "status": "succeeded", "next_action": None})
    told = await client.post(f"{platform['payment'].url}/webhooks/stripe", content=body,
                             headers=headers)
    assert (told.status_code, told.json()) == (200, {"outcome": "applied"}), told.text
    order = await wait_for_status(client, platform, shopper, order_id)
    assert order["status"] == "CONFIRMED", order
    assert [p["status"] for p in await payments_of(client, platform, order_id)] == [
        "succeeded"]
    assert await reservation_status(platform, order_id) == "committed"
    assert await stock_of(client, platform, variant) == {
        "on_hand": 8, "reserved": 0, "available": 8}
    assert recorder.refunds_of(intent["id"]) == []


async def test_a_shipment_no_carrier_takes_refunds_the_charge_at_stripe(
        platform: CheckoutPlatform, client: httpx.AsyncClient,
        recorder: StripeRecorder) -> None:
    catalog = await stock_catalog(client, platform, variants=1, stock=100)
    variant = catalog.variant_ids[0]
    shopper = platform.token(f"refund-{uuid.uuid4().hex[:6]}", "customer")
    # 70 units ship as 35 kg: more than any carrier's parcel may weigh, so the shipping
    # service itself refuses the shipment, after the charge went through.
    order_id = await place_order(client, platform, shopper, variant, "pm_card_visa",
                                 quantity=70)
    order = await wait_for_status(client, platform, shopper, order_id)
    assert order["status"] == "CANCELLED", order
    assert "no carrier" in order["reason"]
    assert [t["status"] for t in order["timeline"]] == [
        "PENDING", "INVENTORY_RESERVED", "PAID", "CANCELLING", "CANCELLED"]
    intent = only_intent(recorder, order_id)
    assert intent["status"] == "succeeded"
    refunds = recorder.refunds_of(intent["id"])
    assert len({r.idempotency_key for r in refunds}) == 1, refunds
    assert refunds[-1].status == 200 and refunds[-1].answered["object"] == "refund"
    assert refunds[-1].params["amount"] == str(70 * 1250)
    payments = await payments_of(client, platform, order_id)
    assert [(p["status"], p["refunded_amount"]) for p in payments] == [
        ("refunded", 70 * 1250)]
    assert await reservation_status(platform, order_id) == "released"
    assert await stock_of(client, platform, variant) == {
        "on_hand": 100, "reserved": 0, "available": 100}


# -- no card numbers anywhere ----------------------------------------------------------------


async def text_columns(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    """Every text-like column (text, varchar, char, json, jsonb, arrays) of every table in
    every schema but PostgreSQL's own."""
    async with engine.connect() as conn:
        found = await conn.execute(text("""
            SELECT c.table_schema, c.table_name, c.column_name
            FROM information_schema.columns c
            JOIN information_schema.tables t
              ON t.table_schema = c.table_schema AND t.table_name = c.table_name
            WHERE t.table_type = 'BASE TABLE'
              AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
              AND c.table_schema NOT LIKE 'pg_toast%'
              AND c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb',
                                  'ARRAY')
            ORDER BY 1, 2, 3"""))
        return [tuple(row) for row in found.all()]  # type: ignore[misc]


async def pans_in_database(engine: AsyncEngine) -> tuple[set[str], dict[str, list[str]]]:
    """(the schemas scanned, the PANs found per ``schema.table.column``)."""
    columns = await text_columns(engine)
    found: dict[str, list[str]] = {}
    async with engine.connect() as conn:
        for schema, table, column in columns:
            values = await conn.execute(text(
                f'SELECT "{column}"::text FROM "{schema}"."{table}" '
                f'WHERE "{column}" IS NOT NULL'))
            pans = [pan for (value,) in values.all() for pan in find_pans(value)]
            if pans:
                found[f"{schema}.{table}.{column}"] = pans
    return {schema for schema, _, _ in columns}, found


async def pans_in_redis(url: str) -> tuple[int, dict[str, list[str]]]:
    redis = Redis.from_url(url, decode_responses=True, encoding_errors="replace")
    found: dict[str, list[str]] = {}
    keys = 0
    try:
        async for key in redis.scan_iter(count=500):
            keys += 1
            kind = await redis.type(key)
            if kind == "string":
                values = [await redis.get(key) or ""]
            elif kind == "hash":
                values = [f"{k}={v}" for k, v in (await redis.hgetall(key)).items()]
            elif kind == "list":
                values = await redis.lrange(key, 0, -1)
            elif kind == "set":
                values = list(await redis.smembers(key))
            elif kind == "zset":
                values = await redis.zrange(key, 0, -1)
            elif kind == "stream":
                values = [str(fields) for _, fields in await redis.xrange(key)]
            else:
                continue
            pans = [pan for value in [key, *values] for pan in find_pans(str(value))]
            if pans:
                found[key] = pans
    finally:
        await redis.aclose()
    return keys, found


def test_the_scan_knows_a_card_number_when_it_sees_one() -> None:
    """The scan's own check: a test that finds nothing must be able to find something."""
    assert find_pans('{"pan": "4242424242424242"}') == ["4242424242424242"]
    assert find_pans("card 5555 5555 5555 4444 exp") == ["5555555555554444"]
    assert find_pans("amex 3782-822463-10005 as printed, 378282246310005 as typed") == [
        "378282246310005", "378282246310005"]
    assert find_pans("GET /search?q=visa+4242+4242+4242+4242 and /x%204000056655665556") == [
        "4242424242424242", "4000056655665556"]  # as URLs in access lines encode them
    assert find_pans("pm_4000056655665556") == ["4000056655665556"]
    assert find_pans("4242424242424241 fails Luhn; 2026-11-24T10:00:00 is a date; "
                     "a3f4242424242424242b is a hex id; 1732442205123 is a timestamp") == []
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


async def type_card_numbers_where_none_belongs(client: httpx.AsyncClient,
                                               platform: CheckoutPlatform,
                                               variant_id: str) -> None:
    """What a shopper gets wrong: a card number in a shipping address (refused), in a URL
    path or query string (answered, and the access logs must not keep it); an admin's
    shipment with one in its address (refused)."""
    shopper = platform.token(f"pci-{uuid.uuid4().hex[:6]}", "customer")
    typed = {**ADDRESS, "line2": "card 4000 0566 5566 5556"}
    refused = await client.post(
        f"{platform['order'].url}/checkout", json={**checkout_body(variant_id),
                                                   "shipping_address": typed},
        headers={**shopper, "Idempotency-Key": uuid.uuid4().hex})
    assert (refused.status_code, refused.json().get("code")) == (422, "card_number_in_text")
    shipment = await client.post(f"{platform['shipping'].url}/shipments", json={
        "id": str(uuid.uuid4()), "order_id": "pci-typed", "owner": "pci", "currency": "usd",
        "address": {**ADDRESS, "name": "5555-5555-5555-4444"}, "parcels": [
            {"weight_grams": 500, "length_mm": 100, "width_mm": 100, "height_mm": 100}]},
        headers=platform.token("admin-1", "admin"))
    assert (shipment.status_code, shipment.json().get("code")) == (422, "card_number_in_text")
    for service, target in (("order", "/orders/4242424242424242"),
                            ("payment", "/payments/4242 4242 4242 4242"),
                            ("payment", "/payments?order_id=5555+5555+5555+4444"),
                            ("shipping", "/shipments/378282246310005")):
        answer = await client.get(f"{platform[service].url}{target}", headers=shopper)
        assert answer.status_code < 500, answer.text


async def test_no_card_number_is_stored_logged_or_sent_after_checkouts_with_test_cards(
        platform: CheckoutPlatform, client: httpx.AsyncClient, recorder: StripeRecorder,
        redis_server: RedisServer) -> None:
    catalog = await stock_catalog(client, platform, variants=len(TEST_CARDS), stock=20)
    order_url = platform["order"].url
    shopper = platform.token(f"pci-{uuid.uuid4().hex[:6]}", "customer")
    orders = []
    for variant_id, card in zip(catalog.variant_ids, TEST_CARDS, strict=True):
        placed = await client.post(f"{order_url}/checkout", json=checkout_body(
            variant_id, method=card), headers={**shopper, "Idempotency-Key": uuid.uuid4().hex})
        assert placed.status_code == 202, placed.text
        orders.append(placed.json()["id"])
    await client.post(f"{order_url}/cart/items", headers=shopper, json={
        "variant_id": catalog.variant_ids[0], "quantity": 1, "currency": "usd"})
    carted = await client.post(f"{order_url}/cart/checkout", json={
        "payment_method": "pm_card_mastercard", "shipping_address": ADDRESS},
        headers={**shopper, "Idempotency-Key": uuid.uuid4().hex})
    assert carted.status_code == 202, carted.text
    orders.append(carted.json()["id"])
    for order_id in orders:
        assert (await wait_for_status(client, platform, shopper, order_id))[
            "status"] == "CONFIRMED"
    assert recorder.keys("POST", "/v1/payment_intents"), "Stripe should have been asked"
    left = await client.post(f"{order_url}/cart/items", json={  # a cart left in Redis
        "variant_id": catalog.variant_ids[1], "quantity": 1, "currency": "usd"},
        headers=platform.token(f"pci-{uuid.uuid4().hex[:6]}", "customer"))
    assert left.status_code == 200, left.text
    await type_card_numbers_where_none_belongs(client, platform, catalog.variant_ids[0])

    engine = create_async_engine(platform.database_url)
    try:
        # The scan of the databases is itself checked: a canary card number planted in a
        # schema of its own is found, and nothing else is.
        canary = f"pan_canary_{uuid.uuid4().hex[:6]}"
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{canary}"'))
            await conn.execute(text(f'CREATE TABLE "{canary}".notes (body text)'))
            await conn.execute(text(f"INSERT INTO \"{canary}\".notes VALUES "
                                    "('typed by mistake: 4000 0566 5566 5556')"))
        try:
            schemas, found = await pans_in_database(engine)
        finally:
            async with engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{canary}" CASCADE'))
    finally:
        await engine.dispose()
    assert found == {f"{canary}.notes.body": ["4000056655665556"]}
    assert set(platform.schemas.values()) <= schemas, "every service's tables are scanned"

    keys, in_redis = await pans_in_redis(redis_server.url)
    assert keys > 0 and in_redis == {}

    logs = platform.logs()
    assert set(logs) == {"order.log", "payment.log", "product.log", "shipping.log"}
    assert all(logs.values()), "every service should have logged something"
    assert {name: find_pans(body) for name, body in logs.items() if find_pans(body)} == {}

    sent = b"\n".join(call.body for call in recorder.calls).decode(errors="replace")
    assert find_pans(sent) == []
    assert "payment_method=pm_card_" in sent  # tokens went to Stripe, not numbers
