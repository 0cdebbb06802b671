"""The search service's tables.

``search_documents`` is the service's own copy of the catalog, written by the event consumer
in the same transaction that marks the event processed. The PostgreSQL engine searches it
directly (the tsvector is a generated column, so it can never lag the row); the
Elasticsearch engine is a projection of it, and a rebuild reads from it. ``deleted`` rows are
tombstones that keep the last version, so a late ``product.updated`` cannot bring a deleted
product back.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.core.db import new_metadata
from services.core.migrations import Migrations

#: Weighted like the Elasticsearch mapping's boosts: name ≫ brand > category > description.
DOCUMENT_VECTOR = (
    "setweight(to_tsvector('simple'::regconfig, coalesce(name, '')), 'A') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(brand, '')), 'B') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(category, '')), 'C') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(description, '')), 'D')"
)
#: Name, brand and category only: the "strong match" tier a search takes candidates from
#: first. Its own column and GIN index, because restricting a query on ``document`` to
#: weights A-C makes PostgreSQL recheck every row that has the words anywhere.
TITLE_VECTOR = (
    "setweight(to_tsvector('simple'::regconfig, coalesce(name, '')), 'A') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(brand, '')), 'B') || "
    "setweight(to_tsvector('simple'::regconfig, coalesce(category, '')), 'C')"
)
#: What typo-tolerant matching compares against (trigram word similarity).
FUZZY_TEXT = "lower(name || ' ' || coalesce(brand, '') || ' ' || category)"


class Base(DeclarativeBase):
    metadata = new_metadata()


class SearchDocumentRow(Base):
    __tablename__ = "search_documents"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, server_default="")
    category: Mapped[str] = mapped_column(String(63))
    brand: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    variants: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'"))
    images: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'"))
    #: ``name:value`` for every attribute value: facet counts unnest a plain array (cheap,
    #: and estimated well by the planner) and filters are array overlaps on a GIN index.
    attribute_pairs: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    #: Average of approved reviews (None: no reviews), from the review service's events.
    rating: Mapped[float | None] = mapped_column(Float)
    rating_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    price_min: Mapped[int | None] = mapped_column(BigInteger)
    price_max: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    in_stock: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: When this service last wrote the row: a rebuild copies rows changed since it began.
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    document: Mapped[str] = mapped_column(TSVECTOR, Computed(DOCUMENT_VECTOR, persisted=True))
    fuzzy_text: Mapped[str] = mapped_column(Text, Computed(FUZZY_TEXT, persisted=True))
    title: Mapped[str] = mapped_column(TSVECTOR, Computed(TITLE_VECTOR, persisted=True))

    __table_args__ = (
        Index("ix_search_documents_document", "document", postgresql_using="gin"),
        Index("ix_search_documents_title", "title", postgresql_using="gin"),
        Index("ix_search_documents_fuzzy_text", "fuzzy_text", postgresql_using="gin",
              postgresql_ops={"fuzzy_text": "gin_trgm_ops"}),
        Index("ix_search_documents_attribute_pairs", "attribute_pairs",
              postgresql_using="gin"),
        Index("ix_search_documents_category", "category"),
        Index("ix_search_documents_price_min", "price_min"),
        Index("ix_search_documents_changed_at", "changed_at"),
        Index("ix_search_documents_created_at", "created_at"),
        Index("ix_search_documents_rating", "rating"),
    )


class SearchRatingRow(Base):
    """The latest rating summary per product, whether or not the product is in the store
    yet: a product created after its first review still gets its rating."""

    __tablename__ = "search_ratings"

    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    rating: Mapped[float | None] = mapped_column(Float)
    rating_count: Mapped[int] = mapped_column(Integer)
    #: When the review service computed the summary: an older one never replaces a newer.
    rated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SearchQueryRow(Base):
    """One search a shopper ran: what was asked and how many results came back."""

    __tablename__ = "search_queries"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    query: Mapped[str] = mapped_column(Text)
    normalized: Mapped[str] = mapped_column(Text)
    filtered: Mapped[bool] = mapped_column(Boolean)
    results: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())

    __table_args__ = (Index("ix_search_queries_created_at", "created_at"),
                      Index("ix_search_queries_user_id", "user_id", "created_at"))


class SearchClickRow(Base):
    """A result the shopper opened; one per (search, product), so double clicks count once."""

    __tablename__ = "search_clicks"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    query_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("search_queries.id", ondelete="CASCADE"))
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    position: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())

    __table_args__ = (UniqueConstraint("query_id", "product_id"),)


MIGRATIONS = Migrations(branch="search", versions_dir=Path(__file__).parent / "migrations",
                        metadata=Base.metadata)
