"""The search service's app: the core, the chosen engine and the product-event consumer.

Run with ``python -m services.search serve`` or ``uvicorn services.search.app:app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from kommerce.contracts.events.product import CATALOG_EVENTS
from kommerce.contracts.events.review import RATING_CHANGED
from services.core.app import Consume, ServiceRuntime, create_service_app, lazy_app
from services.core.db import Database
from services.core.events.consumer import EventHandlers
from services.core.events.envelope import EventEnvelope
from services.core.health import ReadinessCheck
from services.core.state import AppState
from services.core.transient import RetryLater, is_transient
from services.search import api
from services.search.backend import SearchBackend
from services.search.catalog import catalog_pages
from services.search.elastic import ElasticsearchBackend
from services.search.models import MIGRATIONS
from services.search.postgres import PostgresBackend
from services.search.service import SearchIndexer, SearchService
from services.search.settings import SearchSettings

log = logging.getLogger(__name__)

FILL_RETRY_MAX_SECONDS = 30.0
#: The start-up fill's task, for tests that wait for it.
FILL_IF_EMPTY = AppState[asyncio.Task[None]]("fill_if_empty")

DESCRIPTION = """Catalog search with facets, autocomplete, typo tolerance and analytics,
kept in sync from the product service's events, with ratings from the review service's.
Prices are integers in minor units."""


def make_backend(settings: SearchSettings, database: Database) -> SearchBackend:
    if settings.search_backend == "elasticsearch":
        return ElasticsearchBackend(settings.elasticsearch_url, settings.search_index_alias,
                                    timeout=settings.elasticsearch_timeout_seconds)
    return PostgresBackend(database)


class SearchComponents:
    """The engine and services, built once the core's database is up.

    The core starts consumers before lifespan hooks, so an event can arrive before the
    engine exists; it is then retried (RetryLater) rather than failed. At start-up an empty
    store is filled from the product service's catalog (see :mod:`services.search.catalog`)
    and an engine that lost its index is rebuilt from the store.
    """

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self.indexer: SearchIndexer | None = None

    @asynccontextmanager
    async def lifespan(self, app: FastAPI, runtime: ServiceRuntime) -> AsyncIterator[None]:
        database = runtime.require_database()
        backend = make_backend(self.settings, database)
        fill: asyncio.Task[None] | None = None
        try:
            await backend.start()
            self.indexer = SearchIndexer(database, backend)
            api.INDEXER.put(app, self.indexer)
            api.SEARCH.put(app, SearchService(database, backend))
            # In the background: the service answers (from whatever it has) meanwhile, and
            # a product service that is not up yet is waited for rather than failing start.
            fill = asyncio.create_task(self._fill_if_empty(self.indexer, runtime),
                                       name="search-fill-if-empty")
            FILL_IF_EMPTY.put(app, fill)
            yield
        finally:
            if fill is not None:
                fill.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fill
            self.indexer = None
            await backend.close()

    async def _fill_if_empty(self, indexer: SearchIndexer, runtime: ServiceRuntime) -> None:
        """Fill an empty store from the product service, or rebuild an empty or outdated
        engine from the store; transient failures are retried with backoff until it works."""
        url = self.settings.product_service_url
        catalog = None
        if url is not None:
            product = runtime.http.client("product", url)

            def catalog() -> AsyncIterator[list[dict[str, Any]]]:
                return catalog_pages(product)

        delay = 0.5
        while True:
            try:
                log.info("search start-up: %s", await indexer.fill_if_empty(catalog))
                return
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("search start-up fill failed; rebuild by hand "
                                  "(python -m services.search rebuild)")
                    return
                log.warning("search start-up fill: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, FILL_RETRY_MAX_SECONDS)

    def handlers(self, event_types: Sequence[str]) -> EventHandlers:
        """Handlers that defer to the indexer once it exists."""
        deferred = EventHandlers()
        for event_type in event_types:
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
        consumers=[Consume(settings.product_topic, components.handlers(CATALOG_EVENTS)),
                   Consume(settings.review_topic, components.handlers([RATING_CHANGED]))],
        lifespan_hooks=[components.lifespan],
        readiness_checks=[ReadinessCheck("search_engine", components.ping, timeout_seconds=3)],
        title="kommerce search", description=DESCRIPTION,
    )


#: ``services.search.app:app`` for uvicorn, built on first access from the environment.
__getattr__ = lazy_app(create_app, globals())
