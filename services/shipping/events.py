"""What the shipping service publishes (topic ``shipping.events``, keyed by order id):

* ``shipment.created`` / ``shipment.cancelled`` — for the order saga and the shop front;
* ``shipment.status_changed`` — every tracking step, with the carrier's description;
* ``shipment.delivered`` — the delivery notification (the order service marks the order
  delivered; a notifier mails the shopper).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.core.events.envelope import EventEnvelope
from services.core.events.outbox import add_event

SHIPMENT_CREATED = "shipment.created"
SHIPMENT_CANCELLED = "shipment.cancelled"
SHIPMENT_STATUS_CHANGED = "shipment.status_changed"
SHIPMENT_DELIVERED = "shipment.delivered"


class Publisher:
    def __init__(self, source: str) -> None:
        self.source = source

    async def publish(self, session: AsyncSession, event_type: str, key: str,
                      payload: dict[str, Any]) -> None:
        await add_event(session, EventEnvelope.new(event_type, source=self.source, key=key,
                                                   payload=payload))
