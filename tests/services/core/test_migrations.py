"""Migrations: the shared env, the core branch and a service branch, under a lock."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from services.core import migrations
from services.core.db import Database, create_engine
from tests.services.support import unique

from .sample_service.models import MIGRATIONS

pytestmark = pytest.mark.postgres


async def _tables(database: Database) -> set[str]:
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
            {"s": database.schema},
        )
        return {row[0] for row in rows}


async def test_upgrade_creates_service_and_core_tables_in_the_service_schema(
    database: Database,
) -> None:
    await migrations.upgrade(database, MIGRATIONS)

    assert await _tables(database) >= {"widgets", "outbox", "processed_events",
                                       "alembic_version"}
    assert await migrations.current_revisions(database) == migrations.head_revisions(MIGRATIONS)


async def test_upgrade_twice_is_a_no_op(database: Database) -> None:
    await migrations.upgrade(database, MIGRATIONS)
    await migrations.upgrade(database, MIGRATIONS)

    assert await migrations.current_revisions(database) == {"core_0001", "w0001"}


async def test_replicas_migrating_together_migrate_once(database: Database) -> None:
    await asyncio.gather(*(migrations.upgrade(database, MIGRATIONS) for _ in range(4)))

    assert await migrations.current_revisions(database) == {"core_0001", "w0001"}


async def test_upgrades_of_several_schemas_at_once_in_one_process_all_complete(
        core_database_url: str) -> None:
    """Shards, or services tested side by side, migrate from one process at the same time;
    Alembic's context is process-global, so they take turns rather than corrupt each other."""
    databases = [Database(create_engine(core_database_url, schema, pool_size=2), schema)
                 for schema in (unique("m") for _ in range(4))]
    try:
        await asyncio.gather(*(migrations.upgrade(db, MIGRATIONS) for db in databases))
        for db in databases:
            assert await migrations.current_revisions(db) == {"core_0001", "w0001"}
            assert await _tables(db) >= {"widgets", "outbox", "alembic_version"}
    finally:
        for db in databases:
            await db.dispose()


async def test_bare_table_names_resolve_to_the_service_schema(database: Database) -> None:
    await migrations.upgrade(database, MIGRATIONS)
    async with database.session() as session, session.begin():
        await session.execute(text("INSERT INTO widgets (id, name, count) VALUES (1, 'a', 0)"))

    async with database.engine.connect() as conn:
        count = await conn.scalar(text(f'SELECT count(*) FROM "{database.schema}".widgets'))
    assert count == 1


async def test_downgrade_to_base_removes_the_service_tables(database: Database) -> None:
    await migrations.upgrade(database, MIGRATIONS)
    await migrations.downgrade(database, MIGRATIONS, "widgets@base")

    assert "widgets" not in await _tables(database)
    assert await migrations.current_revisions(database) == {"core_0001"}


async def test_the_models_match_what_the_migrations_build(database: Database) -> None:
    """Autogenerate finds nothing to do: the core's tables and the sample service's models
    are exactly what their revisions create."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from services.core.events.tables import core_metadata

    from .sample_service.models import Base

    await migrations.upgrade(database, MIGRATIONS)
    async with database.engine.connect() as conn:

        def diff(sync_conn):  # type: ignore[no-untyped-def]
            ctx = MigrationContext.configure(
                sync_conn, opts=migrations.context_options(database.schema))
            return compare_metadata(ctx, [core_metadata, Base.metadata])

        assert await conn.run_sync(diff) == []


async def test_a_new_revision_lands_in_the_service_folder_on_its_branch(
    database: Database, tmp_path: Path,
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    spec = migrations.Migrations(branch="gadgets", versions_dir=versions, metadata=None)

    await migrations.make_revision(database, spec, "first", autogenerate=False)
    await migrations.make_revision(database, spec, "second", autogenerate=False)
    await migrations.upgrade(database, spec)

    files = sorted(versions.glob("*.py"))
    assert len(files) == 2
    assert "branch_labels: str | Sequence[str] | None = ('gadgets',)" in "".join(
        f.read_text() for f in files)
    assert len(await migrations.current_revisions(database)) == 2  # core head + gadgets head


def test_the_command_line_upgrades_a_service(core_database_url: str, schema: str) -> None:
    env = {**os.environ, "KOMMERCE_DATABASE_URL": core_database_url,
           "KOMMERCE_DATABASE_SCHEMA": schema}
    target = "tests.services.core.sample_service.models:MIGRATIONS"
    root = Path(__file__).resolve().parents[3]

    def run(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "services.core.migrations", *args],
                              env=env, cwd=root, check=True, capture_output=True,
                              text=True).stdout

    run("upgrade", target)

    assert run("current", target).split() == ["core_0001", "w0001"]
