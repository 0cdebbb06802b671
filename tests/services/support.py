"""Helpers every service's tests share: unique names, polling, an app run in-process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

if TYPE_CHECKING:
    from sqlalchemy import MetaData

    from services.core.db import Database
    from services.core.migrations import Migrations


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0,
                     what: str = "condition") -> None:
    """Poll an async ``check`` until it holds; fail after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen within {within}s")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan and give a client that talks to it in-process."""
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


@asynccontextmanager
async def scratch_schema(database_url: str) -> AsyncIterator[Database]:
    """A database handle on a schema of its own, disposed afterwards."""
    from services.core.db import Database, create_engine

    schema = unique("m")
    database = Database(create_engine(database_url, schema, pool_size=1), schema)
    try:
        yield database
    finally:
        await database.dispose()


async def drift_between_models_and_migrations(database: Database, service_migrations: Migrations,
                                              metadata: MetaData) -> list[Any]:
    """Upgrade a fresh schema, then ask Alembic's autogenerate what is left to do: an empty
    list means the revisions build exactly the service's models (and the core's tables)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from services.core import migrations
    from services.core.events.tables import core_metadata

    await migrations.upgrade(database, service_migrations)
    async with database.engine.connect() as conn:

        def diff(sync_conn: Any) -> list[Any]:
            context = MigrationContext.configure(
                sync_conn, opts=migrations.context_options(database.schema))
            return list(compare_metadata(context, [core_metadata, metadata]))

        return await conn.run_sync(diff)


def published_as_the_core_did(source: str, event_type: str, key: str,
                              payload: dict[str, Any]) -> dict[str, Any]:
    """The outbox row the core's Publisher wrote before each service built its own events
    (it is gone now): an envelope stamped with the source, with the default topic. The
    services' event tests hold their builders to it."""
    from services.core.events.envelope import EventEnvelope
    from services.core.events.outbox import outbox_row

    return outbox_row(EventEnvelope.new(event_type, source=source, key=key, payload=payload))


def comparable(*queued: dict[str, Any]) -> list[dict[str, Any]]:
    """Outbox rows without what differs per event (its id and time)."""
    out = []
    for row in queued:
        envelope = {k: v for k, v in row["envelope"].items() if k not in ("id", "occurred_at")}
        out.append({**{k: v for k, v in row.items() if k != "event_id"}, "envelope": envelope})
    return out
