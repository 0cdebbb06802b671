"""What the order service hears from the others over the bus: a payment settled later
(after 3-D Secure, through Stripe's webhook and the payment service) moves the waiting saga
on, a late decline cancels it, and a delivery turns a confirmed order DELIVERED."""

from __future__ import annotations

from typing import Any

import pytest

from services.core.events.bus import OutgoingMessage
from services.core.events.envelope import EventEnvelope
from tests.services.order.conftest import Service
from tests.services.order.test_checkout import checkout_body, place, settled
from tests.services.support import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def publish(service: Service, topic: str, event_type: str, source: str,
                  payload: dict[str, Any]) -> None:
    envelope = EventEnvelope.new(event_type, source=source, key=payload["order_id"],
                                 payload=payload)
    await service.app.state.runtime.require_bus().publish(
        [OutgoingMessage(topic, envelope.key, envelope.to_bytes())])


async def waiting_for_the_shopper(service: Service, headers: dict[str, str]) -> str:
    order = (await place(service, headers,
                         checkout_body("pm_card_authenticationRequired"))).json()

    async def asked() -> bool:
        return (order["id"], "charge_payment") in service.world.calls

    await eventually(asked, what="the charge to be attempted")
    detail = await settled(service, headers, order["id"], "INVENTORY_RESERVED")
    assert detail["status"] == "INVENTORY_RESERVED"
    return str(order["id"])


async def test_payment_settled_after_3ds_moves_the_saga_on(service: Service) -> None:
    headers = service.auth()
    order_id = await waiting_for_the_shopper(service, headers)
    await publish(service, "payment.events", "payment.succeeded", "payment",
                  {"order_id": order_id, "payment_id": "pay-1", "status": "succeeded"})
    await settled(service, headers, order_id, "CONFIRMED")


async def test_payment_failed_after_3ds_cancels_and_releases(service: Service) -> None:
    headers = service.auth()
    order_id = await waiting_for_the_shopper(service, headers)
    await publish(service, "payment.events", "payment.failed", "payment",
                  {"order_id": order_id, "failure_message": "authentication failed"})
    detail = await settled(service, headers, order_id, "CANCELLED")
    assert "authentication failed" in detail["reason"]
    assert service.world.reservations[order_id] == "released"


async def test_delivery_turns_a_confirmed_order_delivered(service: Service) -> None:
    headers = service.auth()
    order = (await place(service, headers, checkout_body())).json()
    await settled(service, headers, order["id"], "CONFIRMED")
    await publish(service, "shipping.events", "shipment.delivered", "shipping",
                  {"order_id": order["id"], "description": "left at the front door"})
    detail = await settled(service, headers, order["id"], "DELIVERED")
    assert detail["timeline"][-1] == {**detail["timeline"][-1], "status": "DELIVERED",
                                      "note": "left at the front door"}
