"""The shipping service's tables: shipments (with their label as a record) and the
tracking events carriers report, one row each, in the order they happened."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.core.db import new_metadata
from services.core.migrations import Migrations


class Base(DeclarativeBase):
    metadata = new_metadata()


class Shipment(Base):
    __tablename__ = "shipments"
    __table_args__ = (Index("ix_shipments_order_id", "order_id"),)

    #: Chosen by the caller (the order saga), so a retried create finds the first one.
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(32))
    carrier: Mapped[str] = mapped_column(String(64))
    service_level: Mapped[str] = mapped_column(String(32))
    tracking_number: Mapped[str] = mapped_column(String(64), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    address: Mapped[dict[str, Any]] = mapped_column(JSONB)
    parcels: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    label: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class TrackingEvent(Base):
    __tablename__ = "tracking_events"
    __table_args__ = (
        # A carrier repeating a scan must not add a second row.
        UniqueConstraint("shipment_id", "status", "occurred_at",
                         name="uq_tracking_events_scan"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    shipment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("shipments.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


MIGRATIONS = Migrations(
    branch="shipping", versions_dir=Path(__file__).parent / "migrations",
    metadata=Base.metadata,
)
