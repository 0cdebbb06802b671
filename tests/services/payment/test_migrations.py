"""The payment service's revision builds exactly its models, and comes down cleanly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from services.core import migrations
from services.core.db import Database, create_engine
from services.core.events.tables import core_metadata
from services.payment.models import MIGRATIONS, Base
from tests.services.support import unique

pytestmark = [pytest.mark.postgres]


@pytest.fixture
async def database(payment_database_url: str) -> AsyncIterator[Database]:
    schema = unique("m")
    db = Database(create_engine(payment_database_url, schema, pool_size=1), schema)
    yield db
    await db.dispose()


async def test_the_models_match_what_the_migrations_build(database: Database) -> None:
    await migrations.upgrade(database, MIGRATIONS)
    async with database.engine.connect() as conn:

        def diff(sync_conn: Any) -> list[Any]:
            ctx = MigrationContext.configure(
                sync_conn, opts=migrations.context_options(database.schema))
            return compare_metadata(ctx, [core_metadata, Base.metadata])  # type: ignore[no-any-return]

        assert await conn.run_sync(diff) == []


async def test_downgrade_removes_the_payment_tables(database: Database) -> None:
    await migrations.upgrade(database, MIGRATIONS)
    await migrations.downgrade(database, MIGRATIONS, "payment@base")
    assert await migrations.current_revisions(database) == {"core_0001"}
