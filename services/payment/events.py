"""What the payment service publishes: the names, topic and payload are the contract in
:mod:`kommerce.contracts.events.payment` (topic ``payment.events``, keyed by order id so an
order's payment events stay in order; ids, amounts, brand and last four digits, never card
data).
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
