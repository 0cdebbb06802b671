"""The search service's app: the core, the chosen engine and the product-event consumer.

Run with ``python -m services.search serve`` or ``uvicorn services.search.app:app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.app import Consume, ServiceRuntime, create_service_app
from services.core.db import Database
from services.core.events.consumer import EventHandlers
from services.core.events.envelope import EventEnvelope
from services.core.health import ReadinessCheck
from services.core.transient import RetryLater
from services.search import api
from services.search.backend import SearchBackend
from services.search.elastic import ElasticsearchBackend
from services.search.models import MIGRATIONS
from services.search.postgres import PostgresBackend
from services.search.service import SearchIndexer, SearchService
from services.search.settings import SearchSettings

DESCRIPTION = """Catalog search with facets, autocomplete, typo tolerance and analytics,
kept in sync from the product service's events. Prices are integers in minor units."""


def make_backend(settings: SearchSettings, database: Database) -> SearchBackend:
    if settings.search_backend == "elasticsearch":
        return ElasticsearchBackend(settings.elasticsearch_url, settings.search_index_alias,
                                    timeout=settings.elasticsearch_timeout_seconds)
    return PostgresBackend(database)


class SearchComponents:
    """The engine and services, built once the core's database is up.

    The core starts consumers before lifespan hooks, so an event can arrive before the
    engine exists; it is then retried (RetryLater) rather than failed.
    """

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self.indexer: SearchIndexer | None = None

    @asynccontextmanager
    async def lifespan(self, app: FastAPI, runtime: ServiceRuntime) -> AsyncIterator[None]:
        database = runtime.require_database()
        backend = make_backend(self.settings, database)
        try:
            await backend.start()
            self.indexer = SearchIndexer(database, backend)
            app.state.indexer = self.indexer
            app.state.search = SearchService(database, backend)
            yield
        finally:
            self.indexer = None
            await backend.close()

    def handlers(self) -> EventHandlers:
        """Handlers that defer to the indexer once it exists."""
        deferred = EventHandlers()
        for event_type in ("product.created", "product.updated", "product.deleted",
                           "price.changed", "stock.changed"):
            deferred.on(event_type)(self._dispatch)
        return deferred

    async def _dispatch(self, session: AsyncSession, event: EventEnvelope) -> None:
        if self.indexer is None:
            raise RetryLater("the search engine is not started yet")
        await self.indexer.event_handlers.dispatch(session, event)

    async def ping(self) -> None:
        if self.indexer is None:
            raise RuntimeError("the search engine is not started")
        await self.indexer.backend.ping()


def create_app(settings: SearchSettings | None = None) -> FastAPI:
    settings = settings or SearchSettings()
    components = SearchComponents(settings)
    return create_service_app(
        settings, routers=[api.router], migrations=MIGRATIONS,
        consumers=[Consume(settings.product_topic, components.handlers())],
        lifespan_hooks=[components.lifespan],
        readiness_checks=[ReadinessCheck("search_engine", components.ping, timeout_seconds=3)],
        title="kommerce search", description=DESCRIPTION,
    )


def __getattr__(name: str) -> FastAPI:
    """``services.search.app:app`` for uvicorn, built on first access from the environment."""
    if name == "app":
        globals()["app"] = built = create_app()
        return built
    raise AttributeError(name)
