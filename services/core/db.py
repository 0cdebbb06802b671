"""The service's PostgreSQL: one async engine (asyncpg) and sessions bound to its schema.

Schema-per-service works through the connection's ``search_path``: every connection the
pool opens starts with ``search_path = <schema>, public``, so models declare bare table
names and the same code runs against a shared local database (one schema per service) or a
database of its own in production. ``public`` stays on the path for extensions (pg_trgm).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import MetaData, event, exc, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from services.core.settings import ServiceSettings
from services.core.state import AppState

#: Constraint names Alembic can diff and drop reliably (unnamed ones differ per database).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    """A MetaData with the shared naming convention, for one service's tables.

    Each service declares its own base so its migrations see only its own tables::

        class Base(DeclarativeBase):
            metadata = new_metadata()
    """
    return MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(
    url: str,
    schema: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 20,
    pool_timeout: float = 10.0,
    statement_timeout_ms: int = 15_000,
    ping_after_idle_seconds: float = 1.0,
) -> AsyncEngine:
    """An engine whose every connection works in ``schema``, checked before use when it
    has been idle (see :func:`ping_idle_connections`)."""
    server_settings = {"search_path": f"{schema}, public", "application_name": schema}
    if statement_timeout_ms:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connect_args={"server_settings": server_settings},
    )
    ping_idle_connections(engine, ping_after_idle_seconds)
    return engine


def ping_idle_connections(engine: AsyncEngine, idle_seconds: float) -> None:
    """Ping a pooled connection before handing it out only if it sat idle ``idle_seconds``.

    The pool's own ``pre_ping`` pings on every checkout, and asyncpg's ping is three round
    trips (BEGIN, an empty query, ROLLBACK): under load that was most of the statements a
    request sent. A connection returned a moment ago is as good as the query it just ran;
    one that sat idle may have been closed by a restarted PostgreSQL, and is replaced
    before use (so a database restart costs a reconnect rather than failed requests).
    """
    pool_events = engine.sync_engine.pool

    @event.listens_for(pool_events, "checkin")
    def _note_idle_since(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool_events, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:  # the pool retries with a fresh connection
            raise exc.DisconnectionError(f"pooled connection is gone: {error}") from error


class Database:
    """The engine and session factory of one service (or one shard)."""

    def __init__(self, engine: AsyncEngine, schema: str) -> None:
        self.engine = engine
        self.schema = schema
        # expire_on_commit=False: objects stay readable after commit, which async code needs
        # (a lazy refresh would be implicit I/O).
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: ServiceSettings, url: str | None = None) -> Database:
        engine = create_engine(
            url or settings.database_url,
            settings.schema_name,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout_seconds,
            statement_timeout_ms=settings.database_statement_timeout_ms,
        )
        return cls(engine, settings.schema_name)

    def session(self) -> AsyncSession:
        """A new session; use as ``async with db.session() as s, s.begin(): ...``."""
        return self.sessionmaker()

    async def ping(self) -> None:
        """``SELECT 1``; raises when the database cannot answer (for ``/ready``)."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


#: The service's database, put by the lifespan when the app uses one.
DATABASE = AppState[Database]("database")
