"""The envelope every event travels in, whatever the bus.

The id is what consumers deduplicate on; the key is what the bus orders by (one Kafka
partition / one aggregate); ``schema_version`` lets a payload change shape without breaking
consumers that have not been upgraded. ``trace`` carries the W3C trace context across the
bus.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from services.core.tracing import inject_context


class InvalidEvent(ValueError):
    """Bytes off the bus that are not an envelope; they go to the dead-letter stream."""


class EventEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique per event.")
    type: str = Field(
        pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", max_length=255,
        description="Dotted event type, e.g. 'product.created', 'inventory.reserved'.",
    )
    source: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$",
                        description="Service that published it.")
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    key: str = Field(min_length=1, max_length=255,
                     description="Ordering/partition key, usually the aggregate id.")
    payload: dict[str, Any] = Field(default_factory=dict)
    schema_version: int = Field(1, ge=1, le=1000)
    trace: dict[str, str] = Field(default_factory=dict,
                                  description="W3C trace context of the publisher.")

    @classmethod
    def new(cls, type: str, *, source: str, key: str, payload: dict[str, Any],
            schema_version: int = 1) -> EventEnvelope:
        """A fresh event stamped with the current trace context."""
        return cls(type=type, source=source, key=key, payload=payload,
                   schema_version=schema_version, trace=dict(inject_context({})))

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_bytes(cls, data: bytes | str) -> EventEnvelope:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidEvent(_summary(exc)) from exc


def _summary(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
             for err in exc.errors()[:5]]
    return "invalid event envelope: " + "; ".join(parts)
