"""What the product service publishes, and the one helper that publishes it.

The names, topic and payloads are the contract in :mod:`kommerce.contracts.events.product`
(topic ``product.events``). Every event goes through the shard's outbox in the transaction
that made the change. The service consumes nothing yet: the checkout saga calls the
reservation API directly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.core.events.envelope import EventEnvelope
from services.core.events.outbox import add_event


class Publisher:
    """Stamps events with the service's name; ``publish`` joins the session's transaction."""

    def __init__(self, source: str) -> None:
        self.source = source

    async def publish(self, session: AsyncSession, event_type: str, key: str,
                      payload: dict[str, Any]) -> None:
        await add_event(session, EventEnvelope.new(event_type, source=self.source, key=key,
                                                   payload=payload))
