"""Payment events the saga refused (not the order's own charge), kept for the alarm.

Revision ID: order_0002
Revises: order_0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "order_0002"
down_revision: str | Sequence[str] | None = "order_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_event_rejections",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.String(length=100), nullable=True),
        sa.Column("event_id", sa.String(length=100), nullable=True),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("payment_id", sa.String(length=100), nullable=True),
        sa.Column("intent_id", sa.String(length=255), nullable=True),
        sa.Column("amount", sa.String(length=32), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_event_rejections")),
    )
    op.create_index("ix_payment_event_rejections_order_id", "payment_event_rejections",
                    ["order_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_payment_event_rejections_order_id",
                  table_name="payment_event_rejections")
    op.drop_table("payment_event_rejections")
