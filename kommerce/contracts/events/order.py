"""What the order service publishes (topic ``order.events``, keyed by order id).

* ``order.saga_command`` — the next step of a checkout saga; consumed by the order service
  itself, so a command survives a crash between deciding and doing.
* ``order.status_changed`` — every status an order reaches, with the reason and what the
  order holds (the review service's verified purchases read ``owner`` and ``lines``). A
  line names a variant, not a product, because that is all an order stores; ``lines`` came
  later than the other fields (still version 1), so a consumer treats a missing one as
  empty.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kommerce.contracts.events.base import EventPayload, topic_of

ORDER_TOPIC = topic_of("order")
SAGA_COMMAND = "order.saga_command"
ORDER_STATUS_CHANGED = "order.status_changed"
MAX_LINES = 500


class OrderLine(BaseModel):
    """One line of an order: the variant bought (or, from a publisher that knows it, the
    product) and how many."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    variant_id: uuid.UUID | None = None
    quantity: int | None = Field(None, ge=0)
    product_id: uuid.UUID | None = Field(None, exclude_if=lambda value: value is None)


class OrderStatusChanged(EventPayload):
    DESCRIBES: ClassVar[str] = "an order status change"

    order_id: uuid.UUID
    owner: str = Field(min_length=1, max_length=255, description="The shopper's user id.")
    status: str = Field(description="The status reached (PAID, CONFIRMED, CANCELLED, ...).")
    previous: str | None = None
    reason: str | None = Field(None, description="Why, for a cancellation or a hold.")
    lines: list[OrderLine] = Field(default_factory=list, max_length=MAX_LINES)

    @field_validator("lines", mode="before")
    @classmethod
    def _no_lines(cls, value: Any) -> Any:
        return [] if value is None else value


class SagaCommand(EventPayload):
    """Do ``action`` (a saga step) for ``order_id``; ``attempt`` counts the resends."""

    DESCRIBES: ClassVar[str] = "a saga command"

    order_id: uuid.UUID
    action: str = Field(min_length=1)
    attempt: int = Field(ge=0)
