"""The order service's tables.

``orders`` holds what was bought and the status shoppers see; ``order_status_history`` is
the timeline (one row per status change, with the reason); ``sagas`` holds each checkout's
saga state (:mod:`services.order.saga`) as JSON with its next deadline, so a restarted
service picks every unfinished saga up where it stood; ``payment_event_rejections`` keeps
every payment event the saga refused because it was not the order's own charge.
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


class PaymentEventRejection(Base):
    """A payment event (or a participant's answer) that claimed a payment other than the
    saga's own charge, refused and kept for whoever answers the alarm.

    A table of its own rather than the order's timeline: the timeline is the shopper's
    (order detail shows it) and each of its rows is a status the order reached, while a
    refused event changes nothing — and may come from an attacker, may name an order that
    does not exist, or arrive by the hundred. No foreign key to ``orders`` for that reason.
    Only the event's identity and the payment it claimed are kept, each cut to its
    column's length, never the payload as sent.
    """

    __tablename__ = "payment_event_rejections"
    __table_args__ = (Index("ix_payment_event_rejections_order_id", "order_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    order_id: Mapped[str | None] = mapped_column(String(100))
    event_id: Mapped[str | None] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(100))
    source: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(String(32))
    payment_id: Mapped[str | None] = mapped_column(String(100))
    intent_id: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


MIGRATIONS = Migrations(
    branch="order", versions_dir=Path(__file__).parent / "migrations",
    metadata=Base.metadata,
)
