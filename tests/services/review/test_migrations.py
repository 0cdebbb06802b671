"""The review service's revisions build exactly its models, and come down cleanly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.core import migrations
from services.core.db import Database
from services.review.models import MIGRATIONS, Base
from tests.services.support import drift_between_models_and_migrations, scratch_schema

pytestmark = [pytest.mark.postgres]


@pytest.fixture
async def database(review_database_url: str) -> AsyncIterator[Database]:
    async with scratch_schema(review_database_url) as database:
        yield database


async def test_the_models_match_what_the_migrations_build(database: Database) -> None:
    assert await drift_between_models_and_migrations(database, MIGRATIONS, Base.metadata) == []


async def test_downgrade_removes_the_review_tables(database: Database) -> None:
    await migrations.upgrade(database, MIGRATIONS)
    await migrations.downgrade(database, MIGRATIONS, "review@base")
    assert await migrations.current_revisions(database) == {"core_0001"}
