"""What the product service publishes, and the one helper that publishes it.

Every event goes through the shard's outbox in the transaction that made the change, on the
``product.events`` topic. Catalog events are keyed by product id and inventory holds by
reservation id, so a Kafka partition keeps each aggregate's events in order; catalog
payloads carry the product's ``version`` so a consumer can still drop a stale one.

* ``product.created`` / ``product.updated`` — the whole product document (what the search
  service indexes); ``product.deleted`` — id, category and last version.
* ``price.changed`` — one variant's old and new price.
* ``stock.changed`` — one variant's on-hand, reserved and available counts after any change.
* ``inventory.reserved`` / ``inventory.committed`` / ``inventory.released`` — a reservation's
  lines (the part of it on one shard); ``released`` says why (``released``, ``expired``,
  ``aborted``).

The service consumes nothing yet: the checkout saga calls the reservation API directly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.core.events.envelope import EventEnvelope
from services.core.events.outbox import add_event

PRODUCT_CREATED = "product.created"
PRODUCT_UPDATED = "product.updated"
PRODUCT_DELETED = "product.deleted"
PRICE_CHANGED = "price.changed"
STOCK_CHANGED = "stock.changed"
INVENTORY_RESERVED = "inventory.reserved"
INVENTORY_COMMITTED = "inventory.committed"
INVENTORY_RELEASED = "inventory.released"

PUBLISHED = (PRODUCT_CREATED, PRODUCT_UPDATED, PRODUCT_DELETED, PRICE_CHANGED, STOCK_CHANGED,
             INVENTORY_RESERVED, INVENTORY_COMMITTED, INVENTORY_RELEASED)


class Publisher:
    """Stamps events with the service's name; ``publish`` joins the session's transaction."""

    def __init__(self, source: str) -> None:
        self.source = source

    async def publish(self, session: AsyncSession, event_type: str, key: str,
                      payload: dict[str, Any]) -> None:
        await add_event(session, EventEnvelope.new(event_type, source=self.source, key=key,
                                                   payload=payload))
