"""widgets

Revision ID: w0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "w0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("widgets",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "widgets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_widgets")),
        sa.UniqueConstraint("name", name=op.f("uq_widgets_name")),
    )


def downgrade() -> None:
    op.drop_table("widgets")
