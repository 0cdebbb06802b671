"""SQL for shipments and their tracking scans: module functions on the caller's session,
which owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.shipping.models import Shipment, TrackingEvent


async def shipment(session: AsyncSession, shipment_id: uuid.UUID, *,
                   for_update: bool = False) -> Shipment | None:
    if not for_update:
        return await session.get(Shipment, shipment_id)
    query = select(Shipment).where(Shipment.id == shipment_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def insert_shipment(session: AsyncSession, values: dict[str, Any]) -> Shipment | None:
    """The new shipment; None when one with ``values["id"]`` exists (the conflict waits for a
    concurrent insert of that id to commit)."""
    return await session.scalar(
        insert(Shipment).values(**values)
        .on_conflict_do_nothing(index_elements=[Shipment.id]).returning(Shipment))


async def add_scan(session: AsyncSession, shipment_id: uuid.UUID, *, status: str,
                   description: str | None, location: str | None,
                   occurred_at: datetime) -> bool:
    """Store a tracking scan once per (shipment, status, time); False when it was stored
    before."""
    added = await session.execute(
        insert(TrackingEvent).values(
            shipment_id=shipment_id, status=status, description=description,
            location=location, occurred_at=occurred_at)
        .on_conflict_do_nothing(constraint="uq_tracking_events_scan")
        .returning(TrackingEvent.id))
    return added.first() is not None


async def tracking_events(session: AsyncSession,
                          shipment_id: uuid.UUID) -> list[TrackingEvent]:
    query = (select(TrackingEvent).where(TrackingEvent.shipment_id == shipment_id)
             .order_by(TrackingEvent.occurred_at, TrackingEvent.id))
    return list((await session.execute(query)).scalars())
