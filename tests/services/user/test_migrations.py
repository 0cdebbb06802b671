"""The user service's schema: built by its revisions, matching its models, in schema "user"."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from kommerce.testbed.redis import RedisServer
from services.core import migrations
from services.core.db import Database, create_engine
from services.user.app import create_app
from services.user.migrations import MIGRATIONS
from services.user.settings import UserSettings
from tests.services.support import running, unique

from .conftest import user_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


async def test_the_models_match_what_the_migrations_build(user_database_url: str) -> None:
    """Autogenerate finds nothing to do, so the next revision starts from a clean diff."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from services.core.events.tables import core_metadata
    from services.user.models import Base

    schema = unique("user")
    database = Database(create_engine(user_database_url, schema, pool_size=2), schema)
    try:
        await migrations.upgrade(database, MIGRATIONS)
        async with database.engine.connect() as conn:

            def diff(sync_conn):  # type: ignore[no-untyped-def]
                ctx = MigrationContext.configure(
                    sync_conn, opts=migrations.context_options(schema))
                return compare_metadata(ctx, [core_metadata, Base.metadata])

            assert await conn.run_sync(diff) == []
        await migrations.downgrade(database, MIGRATIONS, "user@base")
        assert await migrations.current_revisions(database) == {"core_0001"}
    finally:
        await database.dispose()


async def test_the_default_schema_user_works_although_user_is_a_reserved_word(
    user_database_url: str, redis_server: RedisServer,
) -> None:
    settings = user_settings(user_database_url, redis_server.url, database_schema=None)
    assert settings.schema_name == "user"
    app = create_app(settings)
    async with running(app) as client:
        registered = await client.post("/auth/register", json={
            "email": f"{unique('schema')}@example.com", "password": "schema-test-42"})
        ready = await client.get("/ready")
        async with app.state.runtime.database.session() as session:
            where = await session.scalar(text("SELECT current_schema()"))

    assert registered.status_code == 201
    assert ready.status_code == 200
    assert where == "user"


def test_settings_refuse_half_a_bootstrap_admin() -> None:
    with pytest.raises(ValueError, match="bootstrap"):
        UserSettings(environment="test", bootstrap_admin_email="a@example.com")
