"""The shipping service's events, built in :mod:`services.shipping.events`, are the rows
the core's Publisher wrote (before it went): same type, source, key, topic and payload, key order
included."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from services.core.events.envelope import EventEnvelope
from services.core.events.outbox import outbox_row
from services.shipping import events
from services.shipping.models import Shipment
from tests.services.support import comparable, published_as_the_core_did


def shipment(status: str) -> Shipment:
    return Shipment(id=uuid.uuid4(), order_id=str(uuid.uuid4()), owner="user-1",
                    status=status, carrier="table", tracking_number="KM0123456789ABCDEF")


def published_before(s: Shipment, event_type: str,
                     description: str | None) -> list[dict[str, Any]]:
    return comparable(published_as_the_core_did("shipping", event_type, s.order_id, {
        "shipment_id": str(s.id), "order_id": s.order_id, "owner": s.owner,
        "status": s.status, "carrier": s.carrier, "tracking_number": s.tracking_number,
        "description": description}))


BUILDERS: list[tuple[str, str, str | None, Callable[[Shipment], EventEnvelope]]] = [
    ("created", "shipment.created", None,
     lambda s: events.shipment_created(s, source="shipping")),
    ("cancelled", "shipment.cancelled", None,
     lambda s: events.shipment_cancelled(s, source="shipping")),
    ("in_transit", "shipment.status_changed", "Left the depot",
     lambda s: events.shipment_status_changed(s, "Left the depot", source="shipping")),
    ("delivered", "shipment.status_changed", None,
     lambda s: events.shipment_status_changed(s, None, source="shipping")),
    ("delivered", "shipment.delivered", "Left at the door",
     lambda s: events.shipment_delivered(s, "Left at the door", source="shipping")),
]


@pytest.mark.parametrize(("status", "event_type", "description", "build"), BUILDERS)
def test_each_event_is_written_as_the_publisher_wrote_it(
        status: str, event_type: str, description: str | None,
        build: Callable[[Shipment], EventEnvelope]) -> None:
    s = shipment(status)
    written = comparable(outbox_row(build(s)))

    assert json.dumps(written) == json.dumps(published_before(s, event_type, description))
    assert written[0]["topic"] == "shipping.events"
    assert written[0]["event_key"] == s.order_id
