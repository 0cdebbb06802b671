"""The shipping service's events, built in :mod:`services.shipping.events`, are the rows
the core's Publisher wrote (before it went): same type, source, key, topic and payload, key order
included."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import pytest

from services.core.events.envelope import EventEnvelope
from services.core.events.outbox import add_event
from services.shipping import events
from services.shipping.models import Shipment


def session() -> Any:
    """Just enough of an AsyncSession for add_event: the rows it queues for the commit."""
    return SimpleNamespace(sync_session=SimpleNamespace(info={}))



def publish_as_the_core_did(session: Any, source: str, event_type: str, key: str,
                            payload: dict[str, Any]) -> Coroutine[Any, Any, None]:
    """What the core's Publisher did before each service built its own events (it is gone
    now): an envelope stamped with the source, into the outbox with the default topic."""
    return add_event(session, EventEnvelope.new(event_type, source=source, key=key,
                                                payload=payload))

def rows(fake: Any) -> list[dict[str, Any]]:
    [queued] = fake.sync_session.info.values()
    out = []
    for row in queued:
        envelope = {k: v for k, v in row["envelope"].items() if k not in ("id", "occurred_at")}
        out.append({**{k: v for k, v in row.items() if k != "event_id"}, "envelope": envelope})
    return out


def shipment(status: str) -> Shipment:
    return Shipment(id=uuid.uuid4(), order_id=str(uuid.uuid4()), owner="user-1",
                    status=status, carrier="table", tracking_number="KM0123456789ABCDEF")


def published_before(s: Shipment, event_type: str,
                     description: str | None) -> list[dict[str, Any]]:
    fake = session()
    asyncio.run(publish_as_the_core_did(fake, "shipping", event_type, s.order_id, {
        "shipment_id": str(s.id), "order_id": s.order_id, "owner": s.owner,
        "status": s.status, "carrier": s.carrier, "tracking_number": s.tracking_number,
        "description": description}))
    return rows(fake)


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
    fake = session()
    asyncio.run(add_event(fake, build(s)))

    assert json.dumps(rows(fake)) == json.dumps(published_before(s, event_type, description))
    assert rows(fake)[0]["topic"] == "shipping.events"
    assert rows(fake)[0]["event_key"] == s.order_id
