"""The search service's first schema: the document store and search analytics.

Revision ID: search_0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from services.search.models import DOCUMENT_VECTOR, FUZZY_TEXT

revision: str = "search_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("search",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # In public (on every service's search_path), so one copy serves all schemas.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
    op.create_table(
        "search_documents",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("category", sa.String(length=63), nullable=False),
        sa.Column("brand", sa.String(length=200), nullable=True),
        sa.Column("attributes", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'{}'"), nullable=False),
        sa.Column("variants", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'"), nullable=False),
        sa.Column("images", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'"), nullable=False),
        sa.Column("price_min", sa.BigInteger(), nullable=True),
        sa.Column("price_max", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("in_stock", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("document", postgresql.TSVECTOR(),
                  sa.Computed(DOCUMENT_VECTOR, persisted=True), nullable=False),
        sa.Column("fuzzy_text", sa.Text(), sa.Computed(FUZZY_TEXT, persisted=True),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_documents")),
    )
    op.create_index("ix_search_documents_document", "search_documents", ["document"],
                    postgresql_using="gin")
    op.create_index("ix_search_documents_fuzzy_text", "search_documents", ["fuzzy_text"],
                    postgresql_using="gin", postgresql_ops={"fuzzy_text": "gin_trgm_ops"})
    op.create_index("ix_search_documents_attributes", "search_documents", ["attributes"],
                    postgresql_using="gin", postgresql_ops={"attributes": "jsonb_path_ops"})
    op.create_index("ix_search_documents_category", "search_documents", ["category"])
    op.create_index("ix_search_documents_price_min", "search_documents", ["price_min"])
    op.create_index("ix_search_documents_changed_at", "search_documents", ["changed_at"])
    op.create_table(
        "search_queries",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("normalized", sa.Text(), nullable=False),
        sa.Column("filtered", sa.Boolean(), nullable=False),
        sa.Column("results", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_queries")),
    )
    op.create_index("ix_search_queries_created_at", "search_queries", ["created_at"])
    op.create_index("ix_search_queries_user_id", "search_queries", ["user_id", "created_at"])
    op.create_table(
        "search_clicks",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("query_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["query_id"], ["search_queries.id"], ondelete="CASCADE",
                                name=op.f("fk_search_clicks_query_id_search_queries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_clicks")),
        sa.UniqueConstraint("query_id", "product_id",
                            name=op.f("uq_search_clicks_query_id")),
    )


def downgrade() -> None:
    op.drop_table("search_clicks")
    op.drop_table("search_queries")
    op.drop_table("search_documents")
