"""Payments, refunds, saved cards, the append-only audit log and applied webhook events.

Revision ID: payment_0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "payment_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("payment",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("order_id", sa.String(length=100), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("intent_id", sa.String(length=255), nullable=True),
        sa.Column("card_brand", sa.String(length=32), nullable=True),
        sa.Column("card_last4", sa.String(length=4), nullable=True),
        sa.Column("decline_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("risk_level", sa.String(length=32), nullable=True),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payments_amount_positive")),
        sa.CheckConstraint("refunded_amount >= 0 AND refunded_amount <= amount",
                           name=op.f("ck_payments_refund_within_amount")),
        sa.CheckConstraint("card_last4 IS NULL OR card_last4 ~ '^[0-9]{4}$'",
                           name=op.f("ck_payments_last4_only")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payments_idempotency_key")),
        sa.UniqueConstraint("intent_id", name=op.f("uq_payments_intent_id")),
    )
    op.create_index("ix_payments_order_id", "payments", ["order_id"], unique=False)
    op.create_index("ix_payments_owner", "payments", ["owner"], unique=False)
    op.create_table(
        "refunds",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("payment_id", sa.UUID(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("provider_refund_id", sa.String(length=255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_refunds_amount_positive")),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.id"],
                                name=op.f("fk_refunds_payment_id_payments"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_refunds_idempotency_key")),
    )
    op.create_index(op.f("ix_refunds_payment_id"), "refunds", ["payment_id"], unique=False)
    op.create_table(
        "payment_audit_log",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("payment_id", sa.UUID(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_audit_log")),
    )
    op.create_index(op.f("ix_payment_audit_log_payment_id"), "payment_audit_log",
                    ["payment_id"], unique=False)
    # Append-only: the log is evidence, so not even the service may rewrite it.
    op.execute("""
        CREATE FUNCTION payment_audit_log_is_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'payment_audit_log is append-only';
        END $$
    """)
    op.execute("""
        CREATE TRIGGER payment_audit_log_append_only
        BEFORE UPDATE OR DELETE OR TRUNCATE ON payment_audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION payment_audit_log_is_append_only()
    """)
    op.create_table(
        "webhook_events",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_webhook_events")),
    )


    op.create_table(
        "customers",
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("provider_customer_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_customers")),
    )
    op.create_table(
        "saved_payment_methods",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("brand", sa.String(length=32), nullable=True),
        sa.Column("last4", sa.String(length=4), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("last4 IS NULL OR last4 ~ '^[0-9]{4}$'",
                           name=op.f("ck_saved_payment_methods_last4_only")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saved_payment_methods")),
    )
    op.create_index("ix_saved_payment_methods_owner", "saved_payment_methods", ["owner"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_saved_payment_methods_owner", table_name="saved_payment_methods")
    op.drop_table("saved_payment_methods")
    op.drop_table("customers")
    op.drop_table("webhook_events")
    op.execute("DROP TRIGGER payment_audit_log_append_only ON payment_audit_log")
    op.execute("DROP FUNCTION payment_audit_log_is_append_only()")
    op.drop_index(op.f("ix_payment_audit_log_payment_id"), table_name="payment_audit_log")
    op.drop_table("payment_audit_log")
    op.drop_index(op.f("ix_refunds_payment_id"), table_name="refunds")
    op.drop_table("refunds")
    op.drop_index("ix_payments_owner", table_name="payments")
    op.drop_index("ix_payments_order_id", table_name="payments")
    op.drop_table("payments")
