"""The search service's rules: applying product and rating events, filling an empty store
from the catalog, answering searches, analytics.

No FastAPI here. The document store (PostgreSQL) is written first, inside the consumer's
transaction; the engine is then updated before that transaction commits, so a failure
of the engine rolls the event back for a retry rather than losing it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from elastic_transport import TransportError
from elasticsearch import ApiError
from sqlalchemy.ext.asyncio import AsyncSession

from kommerce.contracts.events.base import InvalidPayload
from kommerce.contracts.events.product import ProductChanged, ProductDeleted
from kommerce.contracts.events.review import RatingChanged
from services.core.db import Database
from services.core.errors import InvalidRequest, NotFound, ServiceUnavailable
from services.core.metrics import counter, histogram
from services.core.transient import RetryLater
from services.search import events
from services.search import repository as repo
from services.search.backend import SearchBackend, SearchQuery, SearchResults, Suggestion, terms_of
from services.search.documents import ProductDocument

log = logging.getLogger(__name__)
T = TypeVar("T")

SEARCHES = counter("search_queries_total", "Searches answered, by engine and outcome "
                   "(results, zero_results)", ["engine", "outcome"])
SEARCH_LATENCY = histogram("search_engine_seconds", "Time the engine took per search",
                           ["engine", "operation"])

#: How long a rebuild waits before its last catch-up pass, so consumer transactions that
#: wrote to the old index just before the switch have committed their store rows.
REBUILD_SETTLE_SECONDS = 2.0


async def engine_call(call: Callable[[], Awaitable[T]]) -> T:
    """Run an engine call, turning an unreachable or overloaded engine into RetryLater."""
    try:
        return await call()
    except TransportError as exc:
        raise RetryLater(f"search engine unreachable: {exc}") from exc
    except ApiError as exc:
        if exc.meta.status in (429, 502, 503, 504):
            raise RetryLater(f"search engine busy: {exc}") from exc
        raise


class SearchIndexer:
    """Keeps the store and the engine in step with the catalog's events and the products'
    ratings (``rating.changed`` from the review service)."""

    def __init__(self, database: Database, backend: SearchBackend) -> None:
        self.database = database
        self.backend = backend
        self.event_handlers = events.handlers(self)

    async def product_changed(self, session: AsyncSession, payload: Mapping[str, Any], *,
                              schema_version: int = 1) -> None:
        """A ``product.created``/``product.updated`` payload: the whole product."""
        product = ProductChanged.parse(payload, schema_version=schema_version)
        document = await repo.with_rating(session, ProductDocument.from_product(product))
        if await repo.save(session, document, same_version=False):
            await engine_call(lambda: self.backend.index([document]))

    async def product_deleted(self, session: AsyncSession, payload: Mapping[str, Any], *,
                              schema_version: int = 1) -> None:
        deleted = ProductDeleted.parse(payload, schema_version=schema_version)
        if await repo.tombstone(session, deleted.id, deleted.version, deleted.category):
            await engine_call(lambda: self.backend.remove(deleted.id, deleted.version))

    async def rating_changed(self, session: AsyncSession, payload: Mapping[str, Any],
                             rated_at: datetime, *, schema_version: int = 1) -> None:
        """A product's new rating summary (the review service's ``rating.changed``): kept
        per product even before the product is known, and put on its document if it is."""
        summary = RatingChanged.parse(payload, schema_version=schema_version)
        product_id, rating, count = summary.product_id, summary.rating, summary.count
        if not await repo.save_rating(session, product_id, rating, count, rated_at):
            return  # a newer summary is already applied
        document = await repo.rate_document(session, product_id, rating, count)
        if document is not None:
            await engine_call(lambda: self.backend.index([document]))

    async def variant_changed(self, session: AsyncSession, product_id: uuid.UUID,
                              variant_id: uuid.UUID,
                              change: Callable[[ProductDocument, uuid.UUID], ProductDocument]
                              ) -> None:
        """A price or stock change names one variant; unknown products are skipped (the
        product's own created event, or a rebuild, will bring the whole document)."""
        current = await repo.live_document(session, product_id, for_update=True)
        if current is None:
            return
        updated = change(current, variant_id)
        if updated != current and await repo.save(session, updated):
            await engine_call(lambda: self.backend.index([updated]))

    async def load_catalog(self, pages: AsyncIterator[list[dict[str, Any]]]) -> int:
        """Apply whole-catalog pages (``GET /products`` JSON) as ``product.created`` events
        are applied: version-guarded, so an event that brought a newer version meanwhile
        wins. A product the store cannot take is skipped and logged, not fatal: one bad row
        must not leave search empty. How many documents were written."""
        written = 0
        async for page in pages:
            documents: list[ProductDocument] = []
            async with self.database.session() as session, session.begin():
                for product in page:
                    try:
                        document = ProductDocument.from_product(ProductChanged.parse(product))
                    except InvalidPayload as exc:
                        log.warning("catalog product %s skipped: %s", product.get("id"), exc)
                        continue
                    document = await repo.with_rating(session, document)
                    if await repo.save(session, document, same_version=False):
                        documents.append(document)
                await engine_call(functools.partial(self.backend.index, documents))
            written += len(documents)
        await self.backend.refresh()
        return written

    async def fill_if_empty(self, catalog: Callable[[], AsyncIterator[list[dict[str, Any]]]]
                            | None) -> str:
        """At start-up: an empty store is loaded from the catalog (when there is one to read);
        an engine that is empty, or built with an older mapping, while the store is not is
        rebuilt from the store. What was done, for the log."""
        done: list[str] = []
        if await repo.is_empty(self.database):
            if catalog is None:
                return "store empty; no product service configured, waiting for events"
            done.append(f"loaded {await self.load_catalog(catalog())} products from the "
                        "catalog")
        if not await repo.is_empty(self.database) and await self.backend.needs_rebuild():
            done.append(f"engine rebuilt from the store: {await self.rebuild()} documents")
        return "; ".join(done) or "store and engine in place"

    async def rebuild(self) -> int:
        """Rebuild the engine's index from the store, then replay what changed meanwhile.

        Writes during the build land in the old index (which still serves queries); after
        the alias moves, every row changed since the build began is copied again (versions
        make the copy harmless where nothing was missed), and deletions are replayed.
        """
        started = await repo.database_now(self.database)
        count = await self.backend.rebuild(repo.live_batches(self.database))
        await asyncio.sleep(REBUILD_SETTLE_SECONDS)
        async for batch in repo.live_batches(self.database, changed_since=started):
            await self.backend.index(batch)
        for product_id, version in await repo.deleted_since(self.database, started):
            await self.backend.remove(product_id, version)
        drop = getattr(self.backend, "drop_retired", None)
        if drop is not None:
            await drop()
        await self.backend.refresh()
        return count


class SearchService:
    """Answers shoppers' searches and records them for the analytics."""

    def __init__(self, database: Database, backend: SearchBackend) -> None:
        self.database = database
        self.backend = backend

    async def search(self, query: SearchQuery, user_id: str | None
                     ) -> tuple[uuid.UUID, SearchResults]:
        if user_id is not None and terms_of(query.text):
            async with self.database.session() as session:
                boost = await repo.recent_categories(session, user_id)
            query = dataclasses.replace(query, boost_categories=boost)
        with SEARCH_LATENCY.labels(self.backend.name, "search").time():
            results = await self._engine(lambda: self.backend.search(query))
        SEARCHES.labels(self.backend.name,
                        "results" if results.total else "zero_results").inc()
        query_id = uuid.uuid4()
        filtered = bool(query.categories or query.brands or query.attributes
                        or query.price_min is not None or query.price_max is not None
                        or query.in_stock is not None)
        async with self.database.session() as session, session.begin():
            await repo.record_query(session, query_id, query.text,
                                    " ".join(terms_of(query.text)), filtered, results.total,
                                    user_id)
        return query_id, results

    async def autocomplete(self, prefix: str, limit: int) -> list[Suggestion]:
        with SEARCH_LATENCY.labels(self.backend.name, "autocomplete").time():
            return await self._engine(lambda: self.backend.autocomplete(prefix, limit))

    async def record_click(self, query_id: uuid.UUID, product_id: uuid.UUID,
                           position: int) -> None:
        async with self.database.session() as session, session.begin():
            if not await repo.record_click(session, query_id, product_id, position):
                raise NotFound(f"there is no search {query_id}", code="unknown_search")

    async def analytics(self, days: int, limit: int) -> dict[str, Any]:
        since = datetime.now(UTC) - timedelta(days=days)
        async with self.database.session() as session:
            report = await repo.query_report(session, since, limit)
        searches = report["searches"]
        report["zero_result_rate"] = report["zero_result_searches"] / searches if searches else 0
        report["click_through_rate"] = (report["searches_with_click"] / searches
                                        if searches else 0)
        report["since"] = since
        return report

    async def _engine(self, call: Callable[[], Awaitable[T]]) -> T:
        """An engine that cannot answer is a 503 the client may retry; a query the engine
        refuses is the request's fault (400), never a 500."""
        try:
            return await engine_call(call)
        except RetryLater as exc:
            raise ServiceUnavailable("search is unavailable right now; try again shortly",
                                     code="search_unavailable") from exc
        except ApiError as exc:
            if 400 <= exc.meta.status < 500:
                raise InvalidRequest("the search engine refused this query; simplify it",
                                     code="query_refused") from exc
            raise
