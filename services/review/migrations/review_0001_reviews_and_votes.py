"""Reviews and helpful votes: the review service's first schema.

Revision ID: review_0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "review_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("review",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("product_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("rating", sa.SmallInteger(), nullable=False),
        sa.Column("title", sa.String(length=200), server_default="", nullable=False),
        sa.Column("body", sa.Text(), server_default="", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("flags", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'"), nullable=False),
        sa.Column("moderation_reason", sa.String(length=500), nullable=True),
        sa.Column("verified_purchase", sa.Boolean(), server_default=sa.text("false"),
                  nullable=False),
        sa.Column("helpful_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("unhelpful_count", sa.Integer(), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name=op.f("ck_reviews_rating_range")),
        sa.CheckConstraint("status IN ('pending', 'approved', 'rejected')",
                           name=op.f("ck_reviews_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.UniqueConstraint("product_id", "user_id", name=op.f("uq_reviews_product_id")),
    )
    op.create_index("ix_reviews_product_status", "reviews",
                    ["product_id", "status", "created_at"])
    op.create_index("ix_reviews_status_created", "reviews", ["status", "created_at"])
    op.create_table(
        "review_votes",
        sa.Column("review_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("helpful", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["review_id"], ["reviews.id"], ondelete="CASCADE",
                                name=op.f("fk_review_votes_review_id_reviews")),
        sa.PrimaryKeyConstraint("review_id", "user_id", name=op.f("pk_review_votes")),
    )


def downgrade() -> None:
    op.drop_table("review_votes")
    op.drop_table("reviews")
