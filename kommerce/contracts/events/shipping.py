"""What the shipping service publishes (topic ``shipping.events``, keyed by order id):

* ``shipment.created`` / ``shipment.cancelled`` — for the order saga and the shop front;
* ``shipment.status_changed`` — every tracking step, with the carrier's description;
* ``shipment.delivered`` — the delivery (the order service marks the order DELIVERED).
"""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import Field

from kommerce.contracts.events.base import EventPayload, topic_of

SHIPPING_TOPIC = topic_of("shipping")
SHIPMENT_CREATED = "shipment.created"
SHIPMENT_CANCELLED = "shipment.cancelled"
SHIPMENT_STATUS_CHANGED = "shipment.status_changed"
SHIPMENT_DELIVERED = "shipment.delivered"


class ShipmentEvent(EventPayload):
    """The shipment as it stands after the change."""

    DESCRIBES: ClassVar[str] = "a shipment event"

    shipment_id: uuid.UUID
    order_id: str = Field(min_length=1, description="The order's id (a shipment made "
                          "outside checkout names no order of the order service's).")
    owner: str | None = None
    status: str
    carrier: str | None = None
    tracking_number: str | None = None
    description: str | None = Field(None, description="The carrier's words for the step.")
