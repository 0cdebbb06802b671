"""The event envelope: what is a valid event and what is not."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.events.envelope import EventEnvelope, InvalidEvent


def test_an_envelope_survives_the_wire() -> None:
    event = EventEnvelope.new("product.created", source="product", key="p-1",
                              payload={"sku": "A-1", "price": 1999})

    again = EventEnvelope.from_bytes(event.to_bytes())

    assert again == event
    assert again.schema_version == 1
    assert again.occurred_at.tzinfo is not None


@pytest.mark.parametrize("change, problem", [
    ({"type": "Created"}, "type"),
    ({"type": "product"}, "type"),
    ({"source": ""}, "source"),
    ({"key": ""}, "key"),
    ({"occurred_at": "2025-01-01T00:00:00"}, "occurred_at"),
    ({"schema_version": 0}, "schema_version"),
    ({"id": "not-a-uuid"}, "id"),
    ({"payload": [1, 2]}, "payload"),
    ({"surprise": 1}, "surprise"),
])
def test_invalid_envelopes_are_refused_naming_the_field(change: dict[str, object],
                                                         problem: str) -> None:
    valid = EventEnvelope.new("order.placed", source="order", key="o-1", payload={})
    data = {**valid.to_json(), **change}

    with pytest.raises(InvalidEvent, match=problem):
        EventEnvelope.from_bytes(orjson.dumps(data))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_an_invalid_event_never_a_crash(data: bytes) -> None:
    with contextlib.suppress(InvalidEvent):
        EventEnvelope.from_bytes(data)


def test_missing_id_and_time_are_filled_in() -> None:
    event = EventEnvelope(type="review.posted", source="review", key="r-1")

    assert isinstance(event.id, uuid.UUID)
    assert isinstance(event.occurred_at, datetime)
