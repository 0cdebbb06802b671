"""The review service's tables: reviews (one per user and product) and helpful votes (one
per user and review). Vote counts are kept on the review, updated in the vote's
transaction, so listing by helpfulness never counts rows."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.core.db import new_metadata
from services.core.migrations import Migrations


class Base(DeclarativeBase):
    metadata = new_metadata()


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    user_id: Mapped[str] = mapped_column(String(255))
    rating: Mapped[int] = mapped_column(SmallInteger)
    title: Mapped[str] = mapped_column(String(200), server_default="")
    body: Mapped[str] = mapped_column(Text, server_default="")
    status: Mapped[str] = mapped_column(String(16))
    flags: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'"))
    moderation_reason: Mapped[str | None] = mapped_column(String(500))
    verified_purchase: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    helpful_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    unhelpful_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())

    __table_args__ = (
        UniqueConstraint("product_id", "user_id"),
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating_range"),
        CheckConstraint("status IN ('pending', 'approved', 'rejected')", name="status"),
        Index("ix_reviews_product_status", "product_id", "status", "created_at"),
        Index("ix_reviews_status_created", "status", "created_at"),
    )


class Vote(Base):
    __tablename__ = "review_votes"

    review_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("reviews.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    helpful: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class Purchase(Base):
    """A product the user bought, one row per (order, product), from the order service's
    events: what makes a review a verified purchase, whichever arrives first. ``active`` is
    false once the order was cancelled (refunded), so the flag can be taken back."""

    __tablename__ = "review_purchases"

    order_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean)
    #: The order event that last changed the row (for tracing a flag back to its cause).
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())

    __table_args__ = (Index("ix_review_purchases_user_product", "user_id", "product_id"),)


MIGRATIONS = Migrations(branch="review", versions_dir=Path(__file__).parent / "migrations",
                        metadata=Base.metadata)
