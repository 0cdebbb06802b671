"""The product service's tables.

Every database the service uses — its own and each shard's — gets the same schema (one
migration branch), so any shard can take any category. Which tables are *used* where:

* the service's own database: ``categories`` and ``sku_claims`` (catalog-wide facts: a
  category's existence, a SKU's uniqueness across all shards);
* each shard: ``products``, ``variants``, ``reservations`` and ``reservation_lines`` (a
  product lives in its category's shard, with its stock and the reservations against it,
  so a reservation is one local transaction) — and its own ``outbox`` (core), so an event
  commits with the row it describes.

Without a shard map the service's own database is the only shard and holds everything.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from services.core.db import new_metadata
from services.core.migrations import Migrations

SLUG_MAX = 63
SKU_MAX = 64


class Base(DeclarativeBase):
    metadata = new_metadata()


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


def _updated() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Category(Base):
    """A category: what shoppers browse by, and the unit the shard map places."""

    __tablename__ = "categories"

    slug: Mapped[str] = mapped_column(String(SLUG_MAX), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    parent_slug: Mapped[str | None] = mapped_column(
        String(SLUG_MAX), ForeignKey("categories.slug", ondelete="RESTRICT"), index=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class SkuClaim(Base):
    """A SKU taken by a variant, catalog-wide: the shards' own unique index sees one shard
    only, so uniqueness across them is settled here, before the shard write."""

    __tablename__ = "sku_claims"

    sku: Mapped[str] = mapped_column(String(SKU_MAX), primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    variant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    created_at: Mapped[datetime] = _created()


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        # Listing pages are keyset-paginated newest first, usually within one category.
        Index("ix_products_category_created", "category", "created_at", "id"),
        Index("ix_products_created", "created_at", "id"),
        Index("ix_products_attributes", "attributes", postgresql_using="gin",
              postgresql_ops={"attributes": "jsonb_path_ops"}),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    category: Mapped[str] = mapped_column(String(SLUG_MAX))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    images: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'"))
    #: Bumped by every change to the product or its variants; events carry it so a consumer
    #: can drop a stale one that arrives late.
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    variants: Mapped[list[Variant]] = relationship(
        back_populates="product", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Variant.position, Variant.id")


class Variant(Base):
    """A sellable item: its own SKU, price (minor units) and stock.

    ``on_hand`` is what is in the warehouse; ``reserved`` what checkouts hold. The check
    constraint is the last line against overselling: whatever the code does, PostgreSQL
    refuses ``reserved > on_hand`` or a negative count.
    """

    __tablename__ = "variants"
    __table_args__ = (
        CheckConstraint("price_amount >= 0", name="price_not_negative"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
        CheckConstraint("on_hand >= 0", name="on_hand_not_negative"),
        CheckConstraint("reserved >= 0 AND reserved <= on_hand", name="reserved_within_stock"),
        Index("ix_variants_attributes", "attributes", postgresql_using="gin",
              postgresql_ops={"attributes": "jsonb_path_ops"}),
        Index("ix_variants_product_price", "product_id", "price_amount"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("products.id", ondelete="CASCADE"))
    sku: Mapped[str] = mapped_column(String(SKU_MAX), unique=True)
    name: Mapped[str] = mapped_column(String(200), server_default="")
    #: Where the variant is shown among its product's (the order they were given in).
    position: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    price_amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    on_hand: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    reserved: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    product: Mapped[Product] = relationship(back_populates="variants")


class Reservation(Base):
    """A hold on stock for one checkout (the part of it on this shard).

    The id is the client's, which makes ``reserve`` idempotent: a retried request finds the
    reservation it already made.
    """

    __tablename__ = "reservations"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'committed', 'released', 'expired')",
                        name="known_status"),
        # The sweeper looks only at active holds past their time.
        Index("ix_reservations_active_expiry", "expires_at",
              postgresql_where=text("status = 'active'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    lines: Mapped[list[ReservationLine]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="ReservationLine.sku")


class ReservationLine(Base):
    """One variant held by a reservation. No foreign key to ``variants``: committed lines
    stay as history after a variant is retired (an active one blocks that in the service)."""

    __tablename__ = "reservation_lines"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    reservation_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("reservations.id", ondelete="CASCADE"),
        primary_key=True)
    variant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True,
                                                  index=True)
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    sku: Mapped[str] = mapped_column(String(SKU_MAX))
    quantity: Mapped[int] = mapped_column(Integer)


MIGRATIONS = Migrations(
    branch="product", versions_dir=Path(__file__).parent / "migrations",
    metadata=Base.metadata,
)
