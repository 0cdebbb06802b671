"""A one-table service used to prove the core's migrations, outbox and consumers."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.core.db import new_metadata
from services.core.migrations import Migrations


class Base(DeclarativeBase):
    metadata = new_metadata()


class Widget(Base):
    __tablename__ = "widgets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


MIGRATIONS = Migrations(
    branch="widgets", versions_dir=Path(__file__).parent / "versions", metadata=Base.metadata
)
