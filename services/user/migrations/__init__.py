"""The user service's Alembic branch: ``python -m services.core.migrations upgrade
services.user.migrations:MIGRATIONS`` (the app also runs it at start-up)."""

from __future__ import annotations

from pathlib import Path

from services.core.migrations import Migrations
from services.user.models import Base

MIGRATIONS = Migrations(branch="user", versions_dir=Path(__file__).parent / "versions",
                        metadata=Base.metadata)
