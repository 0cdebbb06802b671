"""Attribute pairs for cheap facets and filters, a title vector, ratings, browse indexes.

``attribute_pairs`` (``name:value`` strings) replaces per-row ``jsonb_each`` unnesting in
facet counts (which also made the planner's estimates so large that every search paid for
JIT compilation) and the containment filters on ``attributes``. Ratings come from the
review service's ``rating.changed`` events; ``search_ratings`` keeps them even for products
the store has not seen yet, so a rating that arrives first is not lost.

Revision ID: search_0002
Revises: search_0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from services.search.models import TITLE_VECTOR

revision: str = "search_0002"
down_revision: str | Sequence[str] | None = "search_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("search_documents", sa.Column(
        "attribute_pairs", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"),
        nullable=False))
    op.add_column("search_documents", sa.Column("rating", sa.Float(), nullable=True))
    op.add_column("search_documents", sa.Column(
        "rating_count", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.execute(
        "UPDATE search_documents SET attribute_pairs = coalesce(("
        "SELECT array_agg(pair.key || ':' || item.value ORDER BY pair.key, item.value) "
        "FROM jsonb_each(attributes) AS pair, "
        "jsonb_array_elements_text(pair.value) AS item(value)"
        "), '{}')")
    op.add_column("search_documents", sa.Column(
        "title", postgresql.TSVECTOR(), sa.Computed(TITLE_VECTOR, persisted=True),
        nullable=False))
    op.create_index("ix_search_documents_title", "search_documents", ["title"],
                    postgresql_using="gin")
    op.drop_index("ix_search_documents_attributes", table_name="search_documents")
    op.create_index("ix_search_documents_attribute_pairs", "search_documents",
                    ["attribute_pairs"], postgresql_using="gin")
    op.create_index("ix_search_documents_created_at", "search_documents", ["created_at"])
    op.create_index("ix_search_documents_rating", "search_documents", ["rating"])
    op.create_table(
        "search_ratings",
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("rating", sa.Float(), nullable=True),
        sa.Column("rating_count", sa.Integer(), nullable=False),
        sa.Column("rated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_search_ratings")),
    )


def downgrade() -> None:
    op.drop_table("search_ratings")
    op.drop_index("ix_search_documents_title", table_name="search_documents")
    op.drop_column("search_documents", "title")
    op.drop_index("ix_search_documents_rating", table_name="search_documents")
    op.drop_index("ix_search_documents_created_at", table_name="search_documents")
    op.drop_index("ix_search_documents_attribute_pairs", table_name="search_documents")
    op.create_index("ix_search_documents_attributes", "search_documents", ["attributes"],
                    postgresql_using="gin", postgresql_ops={"attributes": "jsonb_path_ops"})
    op.drop_column("search_documents", "rating_count")
    op.drop_column("search_documents", "rating")
    op.drop_column("search_documents", "attribute_pairs")
