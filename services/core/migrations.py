"""Alembic migrations run by the core, at start-up or by command.

Every service's schema gets two branches: ``core`` (the outbox and processed-event tables,
kept here) and the service's own, whose folder holds nothing but revision files — the
environment (``alembic_env/env.py``) is shared. Upgrades take a PostgreSQL advisory lock
inside the migration transaction, so replicas starting together migrate once and the others
wait and find nothing to do.

By command (settings from the environment, as the service would read them)::

    python -m services.core.migrations upgrade services.product.migrations:MIGRATIONS
    python -m services.core.migrations revision services.product.migrations:MIGRATIONS -m "add sku"
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import typer
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from services.core.db import Database
from services.core.events.tables import core_metadata
from services.core.settings import ServiceSettings

if TYPE_CHECKING:
    from alembic.runtime.environment import IncludeNameFn, NameFilterParentNames, NameFilterType

ENV_DIR = Path(__file__).parent / "alembic_env"
CORE_VERSIONS = ENV_DIR / "versions"


@dataclass(frozen=True)
class Migrations:
    """What a service hands the core: its branch label, revision folder and tables."""

    branch: str
    versions_dir: Path
    metadata: MetaData | None = None


class ConfigureOptions(TypedDict, total=False):
    """What :func:`context_options` gives Alembic's ``context.configure``, typed as Alembic
    declares those keyword arguments."""

    version_table_schema: str | None
    compare_type: bool
    compare_server_default: bool
    include_name: IncludeNameFn


def context_options(schema: str) -> ConfigureOptions:
    """How the shared env configures Alembic for one service schema.

    The version table lives in the service schema; the schema is also first on the
    connection's search_path, where reflection reports it as the default (None) schema, so
    the version table is named here to keep autogenerate from proposing to drop it.
    """
    return {
        "version_table_schema": schema,
        "compare_type": True,
        "compare_server_default": True,
        "include_name": _not_the_version_table,
    }


def _not_the_version_table(
    name: str | None, type_: NameFilterType, _parents: NameFilterParentNames
) -> bool:
    return not (type_ == "table" and name == "alembic_version")


def alembic_config(migrations: Migrations | None, schema: str) -> Config:
    """A file-less Alembic config for ``schema``: shared env, core + service revisions."""
    config = Config()
    config.set_main_option("script_location", str(ENV_DIR))
    config.set_main_option("path_separator", "os")
    locations = [CORE_VERSIONS] + ([migrations.versions_dir] if migrations else [])
    config.set_main_option(
        "version_locations", os.pathsep.join(str(p) for p in locations).replace("%", "%%")
    )
    config.attributes["schema"] = schema
    metadatas = [core_metadata] + (
        [migrations.metadata] if migrations and migrations.metadata is not None else []
    )
    config.attributes["target_metadata"] = metadatas
    return config


def _lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory-lock key per schema."""
    digest = hashlib.blake2b(f"kommerce.migrate.{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# Alembic's ``op`` and ``context`` are process-global proxies, and a migration's sync code
# yields to the event loop at every statement (SQLAlchemy's greenlet bridge): two upgrades
# running at once in one process (shards, or services tested side by side) would swap each
# other's context mid-script. One lock per event loop serialises them; the advisory lock
# below does the same across processes for one schema.
_in_process: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = \
    weakref.WeakKeyDictionary()


def _process_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _in_process.get(loop)
    if lock is None:
        lock = _in_process[loop] = asyncio.Lock()
    return lock


async def _run_locked(
    database: Database, migrations: Migrations | None, action: Callable[[Config], None]
) -> None:
    async with _process_lock(), database.engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                           {"key": _lock_key(database.schema)})
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{database.schema}"'))

        def run(sync_connection: Connection) -> None:
            config = alembic_config(migrations, database.schema)
            config.attributes["connection"] = sync_connection
            action(config)

        await conn.run_sync(run)


async def upgrade(
    database: Database, migrations: Migrations | None, revision: str = "heads"
) -> None:
    """Bring the schema to ``revision`` (all branch heads by default)."""
    await _run_locked(database, migrations, lambda cfg: command.upgrade(cfg, revision))


async def downgrade(database: Database, migrations: Migrations | None, revision: str) -> None:
    await _run_locked(database, migrations, lambda cfg: command.downgrade(cfg, revision))


async def current_revisions(database: Database) -> set[str]:
    """The revisions the schema is at (empty before the first upgrade)."""
    async with database.engine.connect() as conn:

        def read(sync_connection: Connection) -> set[str]:
            ctx = MigrationContext.configure(
                sync_connection, opts={"version_table_schema": database.schema}
            )
            return set(ctx.get_current_heads())

        return await conn.run_sync(read)


def head_revisions(migrations: Migrations | None) -> set[str]:
    """The revisions an up-to-date schema is at."""
    script = ScriptDirectory.from_config(alembic_config(migrations, "unused"))
    return set(script.get_heads())


async def make_revision(
    database: Database, migrations: Migrations, message: str, *, autogenerate: bool = True
) -> None:
    """Write a new revision file into the service's folder, diffing models against the
    database when ``autogenerate`` (upgrade the database first)."""
    first = not any(migrations.versions_dir.glob("*.py"))

    def write(cfg: Config) -> None:
        command.revision(
            cfg, message=message, autogenerate=autogenerate,
            head="base" if first else f"{migrations.branch}@head",
            branch_label=migrations.branch if first else None,
            version_path=str(migrations.versions_dir),
        )

    await _run_locked(database, migrations, write)


# -- command line ----------------------------------------------------------------------------

cli = typer.Typer(help="Run a service's database migrations.", no_args_is_help=True)


def _load(target: str) -> Migrations:
    module_name, _, attribute = target.partition(":")
    spec = getattr(importlib.import_module(module_name), attribute or "MIGRATIONS")
    if not isinstance(spec, Migrations):
        raise typer.BadParameter(f"{target} is not a Migrations")
    return spec


def _database(spec: Migrations) -> Database:
    settings = ServiceSettings()
    if "KOMMERCE_SERVICE_NAME" not in os.environ and settings.database_schema is None:
        settings = settings.model_copy(update={"service_name": spec.branch})
    return Database.from_settings(settings)


async def _with_database(
    spec: Migrations, action: Callable[[Database], Awaitable[object]]
) -> None:
    database = _database(spec)
    try:
        await action(database)
    finally:
        await database.dispose()


@cli.command("upgrade")
def upgrade_command(target: str, revision: str = "heads") -> None:
    """Upgrade TARGET (module:attribute of a Migrations) to REVISION."""
    spec = _load(target)
    asyncio.run(_with_database(spec, lambda db: upgrade(db, spec, revision)))


@cli.command("downgrade")
def downgrade_command(target: str, revision: str) -> None:
    spec = _load(target)
    asyncio.run(_with_database(spec, lambda db: downgrade(db, spec, revision)))


@cli.command("revision")
def revision_command(
    target: str,
    message: str = typer.Option(..., "-m", "--message"),
    autogenerate: bool = True,
) -> None:
    """Write a new revision for TARGET, autogenerated from its models."""
    spec = _load(target)
    asyncio.run(_with_database(spec, lambda db: make_revision(db, spec, message,
                                                              autogenerate=autogenerate)))


@cli.command("current")
def current_command(target: str) -> None:
    spec = _load(target)

    async def show(db: Database) -> None:
        typer.echo(" ".join(sorted(await current_revisions(db))) or "(none)")

    asyncio.run(_with_database(spec, show))


if __name__ == "__main__":
    # Run the imported module's CLI, not this __main__ copy, so Migrations objects built by
    # service modules are instances of the same class.
    from services.core import migrations as _module

    _module.cli()
