"""The one Alembic environment every service shares.

:mod:`services.core.migrations` hands it a live connection (already inside a transaction
holding the migration lock) and the service's schema and metadata through
``config.attributes``; a service's own migration folder therefore holds only revision files.
"""

from __future__ import annotations

from typing import Any, TypedDict, Unpack

from alembic import context
from sqlalchemy.engine import URL, Connection

from services.core.migrations import context_options

config = context.config
schema: str = config.attributes["schema"]
target_metadata = config.attributes.get("target_metadata")


class _RunOptions(TypedDict, total=False):
    """The rest of ``context.configure``'s keyword arguments, per mode (``literal_binds``
    goes through its ``**kw``)."""

    connection: Connection
    url: str | URL | None
    literal_binds: bool
    dialect_opts: dict[str, Any]


def _configure(**kwargs: Unpack[_RunOptions]) -> None:
    context.configure(target_metadata=target_metadata, **context_options(schema), **kwargs)


def run_offline() -> None:
    """``--sql``: print the DDL instead of running it, for a DBA to review."""
    _configure(url=config.attributes.get("url"), literal_binds=True,
               dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        context.execute(f'SET search_path TO "{schema}", public')
        context.run_migrations()


def run_online(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through services.core.migrations, not bare alembic")
    run_online(connection)
