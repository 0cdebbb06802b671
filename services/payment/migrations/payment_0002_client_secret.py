"""A payment waiting for 3-D Secure keeps its PaymentIntent's client secret, which its
shopper needs (Stripe.js) to do the challenge.

Revision ID: payment_0002
Revises: payment_0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payment_0002"
down_revision: str | Sequence[str] | None = "payment_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("payments", sa.Column("client_secret", sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.drop_column("payments", "client_secret")
