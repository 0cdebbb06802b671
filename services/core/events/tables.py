"""The two tables the event machinery keeps in every service's schema.

They belong to the core's own Alembic branch (``core``), so each service's migrations
create them without copying them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from services.core.db import new_metadata

core_metadata = new_metadata()

#: Events waiting to be published, written in the same transaction as the data they
#: describe. ``seq`` keeps the relay's order stable; ``published_at`` NULL means pending.
outbox = Table(
    "outbox",
    core_metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("topic", String(249), nullable=False),
    Column("event_key", String(255), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("envelope", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
)
# The relay only ever scans pending rows; a partial index keeps that cheap however many
# published rows wait for clean-up.
Index("ix_outbox_pending", outbox.c.seq, postgresql_where=outbox.c.published_at.is_(None))

#: One row per event a consumer group has handled, written in the handler's transaction.
processed_events = Table(
    "processed_events",
    core_metadata,
    Column("consumer_group", String(255), primary_key=True),
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("event_type", String(255), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index("ix_processed_events_processed_at", processed_events.c.processed_at)
