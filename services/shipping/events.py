"""What the shipping service publishes: the names, topic and payload are the contract in
:mod:`kommerce.contracts.events.shipping` (topic ``shipping.events``, keyed by order id).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.core.events.envelope import EventEnvelope
from services.core.events.outbox import add_event


class Publisher:
    def __init__(self, source: str) -> None:
        self.source = source

    async def publish(self, session: AsyncSession, event_type: str, key: str,
                      payload: dict[str, Any]) -> None:
        await add_event(session, EventEnvelope.new(event_type, source=self.source, key=key,
                                                   payload=payload))
