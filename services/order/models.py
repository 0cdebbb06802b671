"""The order service's tables.

``orders`` holds what was bought and the status shoppers see; ``order_status_history`` is
the timeline (one row per status change, with the reason); ``sagas`` holds each checkout's
saga state (:mod:`services.order.saga`) as JSON with its next deadline, so a restarted
service picks every unfinished saga up where it stood.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.core.db import new_metadata
from services.core.migrations import Migrations


class Base(DeclarativeBase):
    metadata = new_metadata()


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_orders_owner_idempotency_key"),
        CheckConstraint("total >= 0", name="total_not_negative"),
        Index("ix_orders_owner_created_at", "owner", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True,
                                          default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(100))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(String(3))
    total: Mapped[int] = mapped_column(BigInteger)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    #: A Stripe payment method token (pm_...), kept until the charge step has run.
    payment_method: Mapped[str] = mapped_column(String(255))
    shipping_address: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class OrderStatusChange(Base):
    __tablename__ = "order_status_history"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class SagaRecord(Base):
    __tablename__ = "sagas"
    __table_args__ = (Index("ix_sagas_deadline_unsettled", "deadline"),)

    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONB)
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    settled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


MIGRATIONS = Migrations(
    branch="order", versions_dir=Path(__file__).parent / "migrations",
    metadata=Base.metadata,
)
