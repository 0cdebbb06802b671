"""The user service's tables: users, their addresses and their refresh-token families.

Roles live in an array on the user row (two roles, read on every token issue: a join would
buy nothing). Preferences are JSONB validated by :class:`schemas.Preferences` on the way in
and out, so new preference keys need no migration. A refresh-token *family* is one login
session: every rotation replaces ``current_jti``, so a token whose jti is not the current
one has already been used, and presenting it again is the reuse that revokes the family.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.core.db import new_metadata

ROLES = ("customer", "admin")


class Base(DeclarativeBase):
    metadata = new_metadata()


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("roles <@ ARRAY['customer', 'admin']::varchar[]", name="known_roles"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True,
                                          default=uuid.uuid4)
    #: Normalised (trimmed, lower-case) by the API, so uniqueness is case-insensitive.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(16))
    roles: Mapped[list[str]] = mapped_column(
        ARRAY(String(32)), server_default=text("ARRAY['customer']::varchar[]"))
    preferences: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"))
    #: Bumped on every change that is published, so consumers can drop stale user.updated.
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class Address(Base):
    __tablename__ = "addresses"
    __table_args__ = (
        # The database, not just the service, guarantees at most one default per user.
        Index("uq_addresses_one_default_per_user", "user_id", unique=True,
              postgresql_where=text("is_default")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True,
                                          default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str | None] = mapped_column(String(50))
    recipient_name: Mapped[str] = mapped_column(String(200))
    line1: Mapped[str] = mapped_column(String(200))
    line2: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(100))
    region: Mapped[str | None] = mapped_column(String(100))
    postal_code: Mapped[str] = mapped_column(String(20))
    country: Mapped[str] = mapped_column(String(2))
    phone: Mapped[str | None] = mapped_column(String(16))
    is_default: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class RefreshFamily(Base):
    """One login session and the one refresh token of it that may still be used."""

    __tablename__ = "refresh_families"

    #: The ``fam`` claim of every refresh token of this session.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    current_jti: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: When the current refresh token expires; past it the family is dead weight.
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
