"""The pool pings a connection only when it has sat idle: a busy service sends no extra
round trips, and a connection a restarted (or meddling) server closed is replaced."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.core.db import Database, create_engine


async def _backend_pid(database: Database) -> int:
    async with database.engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(core_database_url: str, schema: str, pid: int) -> None:
    other = Database(create_engine(core_database_url, schema, pool_size=1), schema)
    try:
        async with other.engine.connect() as conn:
            # Waits (up to 5 s) until the backend has exited, not just been signalled.
            assert (await conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"),
                                       {"pid": pid})).scalar_one()
    finally:
        await other.dispose()


async def test_an_idle_connection_closed_by_the_server_is_replaced_before_use(
        core_database_url: str, schema: str) -> None:
    database = Database(create_engine(core_database_url, schema, pool_size=1,
                                      ping_after_idle_seconds=0.0), schema)
    try:
        first = await _backend_pid(database)
        await _terminate(core_database_url, schema, first)
        second = await _backend_pid(database)
        assert second != first
    finally:
        await database.dispose()


async def test_a_connection_returned_moments_ago_is_used_without_a_ping(
        core_database_url: str, schema: str) -> None:
    """The other side of the trade: within the idle threshold nothing checks, so a
    connection killed in that window fails its next statement (and is then discarded)."""
    database = Database(create_engine(core_database_url, schema, pool_size=1,
                                      ping_after_idle_seconds=3600.0), schema)
    try:
        first = await _backend_pid(database)
        await _terminate(core_database_url, schema, first)
        with pytest.raises(DBAPIError):
            await _backend_pid(database)
        assert await _backend_pid(database) != first
    finally:
        await database.dispose()
