"""What the order service publishes, built in :mod:`services.order.events`: the same type,
source, key, topic and payload (key order included) the orchestrator wrote inline before,
through the outbox rows of :func:`~services.core.events.outbox.add_event` and the saga's
batched arrays (:func:`~services.core.events.outbox.event_arrays`) alike."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace
from typing import Any

import orjson

from services.core.events import outbox
from services.core.events.envelope import EventEnvelope
from services.order import events
from services.order.saga import Command, Compensation, Step

ORDER, VARIANT = uuid.uuid4(), uuid.uuid4()


def order() -> Any:
    """What the builders read of an order (a mapped Order or the saga's SagaOrder)."""
    return SimpleNamespace(id=ORDER, owner="user-1", lines=[
        {"variant_id": str(VARIANT), "quantity": 2, "price": 5}])


def row(event: EventEnvelope) -> dict[str, Any]:
    return outbox.outbox_row(event)


def test_a_saga_command_is_what_the_orchestrator_wrote() -> None:
    for command in (Command(str(ORDER), Step.CHARGE_PAYMENT, 0),
                    Command(str(ORDER), Compensation.REFUND_PAYMENT, 3)):
        event = events.saga_command(ORDER, command, source="order")
        written = row(event)
        assert (written["topic"], written["event_key"], written["event_type"]) == (
            "order.events", str(ORDER), "order.saga_command")
        assert (event.source, event.schema_version) == ("order", 1)
        assert json.dumps(event.payload) == json.dumps({
            "order_id": str(ORDER), "action": command.action.value,
            "attempt": command.attempt})


def test_a_status_change_is_what_the_orchestrator_wrote() -> None:
    event = events.order_status_changed(order(), source="order", status="CANCELLED",
                                        previous="PAYMENT_CHARGED", reason="no carrier")
    written = row(event)
    assert (written["topic"], written["event_key"], written["event_type"]) == (
        "order.events", str(ORDER), "order.status_changed")
    assert event.source == "order"
    assert json.dumps(event.payload) == json.dumps({
        "order_id": str(ORDER), "owner": "user-1", "status": "CANCELLED",
        "previous": "PAYMENT_CHARGED", "reason": "no carrier",
        "lines": [{"variant_id": str(VARIANT), "quantity": 2}]})


def test_the_saga_fast_path_writes_the_builders_envelopes_as_they_are() -> None:
    status = events.order_status_changed(order(), source="order", status="PAID",
                                         previous="INVENTORY_RESERVED", reason=None)
    command = events.saga_command(ORDER, Command(str(ORDER), Step.CREATE_SHIPMENT, 0),
                                  source="order")
    ids, topics, keys, types, envelopes = outbox.event_arrays([status, command])
    assert ids == [status.id, command.id]
    assert topics == ["order.events", "order.events"]
    assert keys == [str(ORDER), str(ORDER)]
    assert types == ["order.status_changed", "order.saga_command"]
    assert [orjson.loads(e) for e in envelopes] == [status.to_json(), command.to_json()]
