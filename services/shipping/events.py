"""What the shipping service publishes; it consumes nothing. The names, topic and payload
are the contract in :mod:`kommerce.contracts.events.shipping` (topic ``shipping.events``,
keyed by order id, so an order's shipment events stay in order). Built here and written to
the outbox by :mod:`.service` in the transaction of the change: the order saga and the
order's timeline learn of a shipment, a cancellation or a delivery only once it is stored.
"""

from __future__ import annotations

from kommerce.contracts.events.shipping import (
    SHIPMENT_CANCELLED,
    SHIPMENT_CREATED,
    SHIPMENT_DELIVERED,
    SHIPMENT_STATUS_CHANGED,
    ShipmentEvent,
)
from services.core.events.envelope import EventEnvelope
from services.shipping.models import Shipment


def shipment_event(shipment: Shipment, event_type: str, *, source: str,
                   description: str | None = None) -> EventEnvelope:
    """``event_type`` with the shipment as it now stands; ``description`` is the carrier's
    words for a tracking step."""
    return EventEnvelope.new(
        event_type, source=source, key=shipment.order_id,
        payload=ShipmentEvent(
            shipment_id=shipment.id, order_id=shipment.order_id, owner=shipment.owner,
            status=shipment.status, carrier=shipment.carrier,
            tracking_number=shipment.tracking_number, description=description).wire())


def shipment_created(shipment: Shipment, *, source: str) -> EventEnvelope:
    return shipment_event(shipment, SHIPMENT_CREATED, source=source)


def shipment_cancelled(shipment: Shipment, *, source: str) -> EventEnvelope:
    return shipment_event(shipment, SHIPMENT_CANCELLED, source=source)


def shipment_status_changed(shipment: Shipment, description: str | None, *,
                            source: str) -> EventEnvelope:
    return shipment_event(shipment, SHIPMENT_STATUS_CHANGED, source=source,
                          description=description)


def shipment_delivered(shipment: Shipment, description: str | None, *,
                       source: str) -> EventEnvelope:
    """Carries the carrier's note too: it is what the order's timeline and the shopper's
    notice show."""
    return shipment_event(shipment, SHIPMENT_DELIVERED, source=source,
                          description=description)
