"""The order service killed (SIGKILL) in the middle of checkouts and started again.

Everything is real and separate: product, payment (Stripe backend, against stripe-mock
through a recording proxy), shipping and order, each its own process on Kafka and
PostgreSQL. Shoppers keep checking out while the order process dies; a shopper whose
request was cut off sends it again with the same ``Idempotency-Key``, as a client must.

Afterwards every saga has reached a final state, and the books balance when counted at the
source: one order per key, one payment row and one Stripe PaymentIntent idempotency key per
order, one committed reservation per order with the stock it took, one shipment per order.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kommerce.testbed.checkout_platform import (
    CheckoutPlatform,
    StripeRecorder,
    checkout_body,
    checkout_platform,
    stock_catalog,
)
from services.order.saga import reservation_id
from tests.services.support import eventually

if TYPE_CHECKING:
    from kommerce.testbed.kafka import KafkaBroker
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer
    from kommerce.testbed.stripe_mock import StripeMock

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.kafka, pytest.mark.stripe]

ORDERS = 36
VARIANTS = 3
STOCK = 1_000
SHOPPER = "crash-shopper"
FINAL = ("CONFIRMED", "CANCELLED")


async def rows(engine: AsyncEngine, sql: str, **params: object) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(sql), params)).all()]


async def unsettled(engine: AsyncEngine, platform: CheckoutPlatform) -> int:
    schema = platform.schemas["order"]
    (count,), = await rows(engine, f'SELECT count(*) FROM "{schema}".orders '
                           "WHERE status NOT IN ('CONFIRMED', 'CANCELLED')")
    return int(count)  # type: ignore[call-overload]


async def test_killing_the_order_service_mid_saga_loses_and_duplicates_nothing(
        postgres_server: PostgresServer, redis_server: RedisServer,
        kafka_broker: KafkaBroker, stripe_mock: StripeMock, tmp_path: Path) -> None:
    database_url = postgres_server.create_database("checkout_crash")
    recorder = StripeRecorder(stripe_mock.api_base)
    # Generous step attempts: while the restarted consumers rejoin their Kafka groups the
    # deadlines resend commands, and the saga must wait that out, not compensate.
    with recorder.serving(), checkout_platform(
            database_url=database_url, redis_url=redis_server.url,
            kafka_bootstrap=kafka_broker.bootstrap_servers, stripe_api_base=recorder.url,
            log_dir=tmp_path / "logs",
            extra_env={"order": {"KOMMERCE_SAGA_STEP_TIMEOUT_SECONDS": "2",
                                 "KOMMERCE_SAGA_MAX_ATTEMPTS": "20"}}) as platform:
        engine = create_async_engine(database_url)
        try:
            await run_and_crash(platform, engine, recorder)
        finally:
            await engine.dispose()


async def run_and_crash(platform: CheckoutPlatform, engine: AsyncEngine,
                        recorder: StripeRecorder) -> None:
    order = platform["order"]
    async with httpx.AsyncClient(timeout=15) as client:
        catalog = await stock_catalog(client, platform, variants=VARIANTS, stock=STOCK)
        variants = catalog.variant_ids
        shopper = platform.token(SHOPPER, "customer")
        placed: dict[str, str] = {}
        attempts: Counter[str] = Counter()
        wanted: Counter[str] = Counter()

        async def shop(i: int) -> None:
            """Check out once, sending the same request again until it is answered."""
            await asyncio.sleep(i * 0.04)  # a steady stream, so the kill lands mid-flow
            key = f"crash-{i}"
            body = checkout_body(variants[i % VARIANTS], quantity=1 + i % 3)
            wanted[body["lines"][0]["variant_id"]] += body["lines"][0]["quantity"]
            while True:
                attempts[key] += 1
                try:
                    response = await client.post(f"{order.url}/checkout", json=body,
                                                 headers={**shopper, "Idempotency-Key": key})
                    if response.status_code in (200, 202):
                        placed[key] = response.json()["id"]
                        return
                except httpx.TransportError:
                    pass  # the service is down: try again, as a shop front would
                await asyncio.sleep(0.2)

        shoppers = [asyncio.create_task(shop(i)) for i in range(ORDERS)]
        await eventually(lambda: _at_least(placed, ORDERS // 3), within=30,
                         what="a third of the checkouts")
        order.kill()
        in_flight = await unsettled(engine, platform)
        assert in_flight > 0, "the kill should land while sagas are under way"
        order.start()
        order.wait_ready()
        await asyncio.gather(*shoppers)
        assert len(placed) == ORDERS
        assert any(n > 1 for n in attempts.values()), "some checkout should have been resent"

        async def all_final() -> bool:
            return await unsettled(engine, platform) == 0

        await eventually(all_final, within=45, what="every saga to reach a final state")

    s = platform.schemas
    order_ids = set(placed.values())
    # Orders: exactly one per key, all confirmed (stripe-mock never declines).
    orders = await rows(engine, f'SELECT id::text, idempotency_key, status, reason FROM '
                        f'"{s["order"]}".orders WHERE owner = :owner', owner=SHOPPER)
    assert len(orders) == ORDERS
    assert {o[0] for o in orders} == order_ids
    assert len({o[1] for o in orders}) == ORDERS
    assert Counter(o[2] for o in orders) == {"CONFIRMED": ORDERS}, orders
    sagas = await rows(engine, f'SELECT count(*) FROM "{s["order"]}".sagas WHERE settled')
    assert sagas == [(ORDERS,)]

    # Charges: one payment row per order, and Stripe asked to create exactly one
    # PaymentIntent key per order (a repeat would reuse the key, never add one).
    payments = await rows(engine, f'SELECT order_id, status FROM "{s["payment"]}".payments')
    assert sorted(p[0] for p in payments) == sorted(order_ids)
    assert {p[1] for p in payments} == {"succeeded"}
    intent_keys = recorder.keys("POST", "/v1/payment_intents")
    assert len(set(intent_keys)) == ORDERS
    assert recorder.keys("POST", "/v1/refunds") == []

    # Reservations: one per order, each committed; the stock taken is what was ordered.
    reservations = await rows(engine, f'SELECT id, status FROM "{s["product"]}".reservations')
    assert sorted(r[0] for r in reservations) == sorted(  # type: ignore[type-var]
        reservation_id(o) for o in order_ids)
    assert {r[1] for r in reservations} == {"committed"}
    stock = await rows(engine, f'SELECT id::text, on_hand, reserved FROM "{s["product"]}"'
                       ".variants")
    assert {v[0]: (v[1], v[2]) for v in stock} == {
        v: (STOCK - wanted[v], 0) for v in variants}

    # Shipments: one per order.
    shipments = await rows(engine, f'SELECT order_id, status FROM "{s["shipping"]}".shipments')
    assert sorted(sh[0] for sh in shipments) == sorted(order_ids)
    assert {sh[1] for sh in shipments} == {"created"}


async def _at_least(placed: dict[str, str], count: int) -> bool:
    return len(placed) >= count
