"""Checkout over Kafka, with the broker restarted while sagas are in flight: every saga
still reaches a final state, with one order and one charge each."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from services.order.models import Order
from tests.services.order.conftest import World, order_service, order_settings
from tests.services.order.test_checkout import checkout_body, place
from tests.services.support import eventually

if TYPE_CHECKING:
    from kommerce.testbed.kafka import KafkaBroker
    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.kafka]

FINAL = {"CONFIRMED", "CANCELLED"}


async def test_sagas_finish_across_a_broker_restart(order_database_url: str,
                                                    redis_server: RedisServer,
                                                    kafka_broker: KafkaBroker) -> None:
    world = World()
    settings = order_settings(order_database_url, redis_server.url, event_bus="kafka",
                              kafka_bootstrap_servers=kafka_broker.bootstrap_servers,
                              saga_step_timeout_seconds=3.0)
    async with order_service(settings, world) as service:
        headers = service.auth("kafka-shopper")
        methods = ["pm_card_visa", "pm_card_chargeDeclined"] * 4
        placed = [(await place(service, headers, checkout_body(m))).json()["id"]
                  for m in methods[:4]]
        await asyncio.to_thread(kafka_broker.restart)
        placed += [(await place(service, headers, checkout_body(m))).json()["id"]
                   for m in methods[4:]]

        async def all_final() -> bool:
            statuses = [(await service.client.get(f"/orders/{o}", headers=headers)).json()
                        ["status"] for o in placed]
            return all(s in FINAL for s in statuses)

        await eventually(all_final, within=120, what="every saga to finish")
        async with service.database.session() as session:
            orders = await session.scalar(select(func.count()).select_from(Order)
                                          .where(Order.owner == "kafka-shopper"))
        assert orders == len(placed)
        for order_id, method in zip(placed, methods, strict=True):
            detail = (await service.client.get(f"/orders/{order_id}", headers=headers)).json()
            expected = "CONFIRMED" if method == "pm_card_visa" else "CANCELLED"
            assert detail["status"] == expected, detail
            assert world.calls[(order_id, "charge_payment")] >= 1
        # One charge per order however often the command was sent: the sandbox saw each
        # order's single idempotency key.
        assert len(world.charge_keys) == len(placed)
        assert len(world.charges) == methods.count("pm_card_visa")
