"""Checkout over Kafka, with the broker restarted while sagas are in flight: every saga
still reaches a final state, with one order and one charge each — counted at the real
payment service and at Stripe (stripe-mock) — and its stock sold or given back."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from services.order.models import Order
from tests.services.order.conftest import RealParticipants, order_service_on
from tests.services.order.test_checkout import checkout_body, place
from tests.services.support import eventually, unique

if TYPE_CHECKING:
    from kommerce.testbed.kafka import KafkaBroker

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.kafka, pytest.mark.stripe]

FINAL = {"CONFIRMED", "CANCELLED"}


async def test_sagas_finish_across_a_broker_restart(real: RealParticipants,
                                                    kafka_broker: KafkaBroker) -> None:
    [variant] = await real.variants(stock=100)
    async with order_service_on(real, event_bus="kafka",
                                kafka_bootstrap_servers=kafka_broker.bootstrap_servers,
                                event_topic_prefix=unique("t") + ".",
                                saga_step_timeout_seconds=3.0) as service:
        shopper = unique("kafka-shopper")
        headers = service.auth(shopper)
        methods = ["pm_card_visa", "pm_card_chargeDeclined"] * 4

        async def checkout(method: str) -> str:
            body = checkout_body(method, quantity=1, variant_id=variant)
            return str((await place(service, headers, body)).json()["id"])

        placed = [await checkout(m) for m in methods[:4]]
        await asyncio.to_thread(kafka_broker.restart)
        placed += [await checkout(m) for m in methods[4:]]

        async def all_final() -> bool:
            statuses = [(await service.client.get(f"/orders/{o}", headers=headers)).json()
                        ["status"] for o in placed]
            return all(s in FINAL for s in statuses)

        await eventually(all_final, within=120, what="every saga to finish")
        async with service.database.session() as session:
            orders = await session.scalar(select(func.count()).select_from(Order)
                                          .where(Order.owner == shopper))
        assert orders == len(placed)
        for order_id, method in zip(placed, methods, strict=True):
            detail = (await service.client.get(f"/orders/{order_id}", headers=headers)).json()
            confirmed = method == "pm_card_visa"
            assert detail["status"] == ("CONFIRMED" if confirmed else "CANCELLED"), detail
            # One charge per order however often the command was sent: one payment at the
            # payment service, one PaymentIntent idempotency key at Stripe.
            assert [p[0] for p in await real.payments(order_id)] == [
                "succeeded" if confirmed else "declined"]
            assert len(real.charge_keys(order_id)) == 1
            assert await real.reservation(order_id) == ("committed" if confirmed
                                                        else "released")
    sold = methods.count("pm_card_visa")
    assert await real.stock(variant) == {"on_hand": 100 - sold, "reserved": 0,
                                         "available": 100 - sold}
