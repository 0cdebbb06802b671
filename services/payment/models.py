"""The payment service's tables.

Nothing here can hold card data: a payment keeps the provider's ids, the amount, the
outcome, and the card's brand and last four digits (what PCI DSS lets a merchant keep and
a receipt needs). The audit log is append-only — a trigger refuses UPDATE and DELETE — so
the record of who charged or refunded what cannot be rewritten by the service itself.
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
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.core.db import new_metadata
from services.core.migrations import Migrations


class Base(DeclarativeBase):
    metadata = new_metadata()


class Payment(Base):
    """One charge attempt: a PaymentIntent and what became of it."""

    __tablename__ = "payments"
    #: ``updated_at`` is set to the database's clock on every change, in the UPDATE that
    #: writes the change; the ORM reads it back at once (one SELECT of that column, where a
    #: second UPDATE and a refresh of the whole row were needed before).
    __mapper_args__ = {"eager_defaults": True}
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("refunded_amount >= 0 AND refunded_amount <= amount",
                        name="refund_within_amount"),
        CheckConstraint("card_last4 IS NULL OR card_last4 ~ '^[0-9]{4}$'",
                        name="last4_only"),
        Index("ix_payments_order_id", "order_id"),
        Index("ix_payments_owner", "owner"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True,
                                          default=uuid.uuid4)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    order_id: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(100))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    #: The intent's client secret while the payment waits for 3-D Secure (its shopper
    #: needs it for Stripe.js); cleared once it no longer does.
    client_secret: Mapped[str | None] = mapped_column(String(255))
    card_brand: Mapped[str | None] = mapped_column(String(32))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    decline_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(Text)
    risk_level: Mapped[str | None] = mapped_column(String(32))
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True,
                                          default=uuid.uuid4)
    payment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("payments.id", ondelete="RESTRICT"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    provider_refund_id: Mapped[str] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class AuditEntry(Base):
    """Every payment action, who took it and the outcome; insert-only."""

    __tablename__ = "payment_audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    payment_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    action: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class WebhookEvent(Base):
    """Stripe event ids already applied, so a redelivered webhook changes nothing."""

    __tablename__ = "webhook_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                  server_default=func.now())


class Customer(Base):
    """The provider's customer for a shopper, made the first time they save a card."""

    __tablename__ = "customers"

    owner: Mapped[str] = mapped_column(String(100), primary_key=True)
    provider_customer_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class SavedPaymentMethod(Base):
    """A card a shopper saved: the provider's id, brand and last four only."""

    __tablename__ = "saved_payment_methods"
    __table_args__ = (
        CheckConstraint("last4 IS NULL OR last4 ~ '^[0-9]{4}$'", name="last4_only"),
        Index("ix_saved_payment_methods_owner", "owner"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    brand: Mapped[str | None] = mapped_column(String(32))
    last4: Mapped[str | None] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


MIGRATIONS = Migrations(
    branch="payment", versions_dir=Path(__file__).parent / "migrations",
    metadata=Base.metadata,
)
