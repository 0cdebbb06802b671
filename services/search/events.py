"""What the search service consumes; it publishes nothing.

Consumed: the product service's catalog events (topic ``product.events``:
``product.created``, ``product.updated``, ``product.deleted``, ``price.changed``,
``stock.changed``) and the review service's ``rating.changed`` (topic ``review.events``), the
contracts in :mod:`kommerce.contracts.events.product` and :mod:`kommerce.contracts.events.review`.
Each payload is parsed by its contract before anything is applied (one that does not parse
is dead-lettered), and the search service's rules apply it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from kommerce.contracts.events.product import (
    PRICE_CHANGED,
    PRODUCT_CREATED,
    PRODUCT_DELETED,
    PRODUCT_UPDATED,
    STOCK_CHANGED,
    PriceChanged,
    StockChanged,
)
from kommerce.contracts.events.review import RATING_CHANGED
from services.core.events.consumer import EventHandlers
from services.core.events.envelope import EventEnvelope
from services.core.metrics import counter

if TYPE_CHECKING:
    from services.search.service import SearchIndexer

INDEXED = counter("search_documents_applied_total", "Product events applied to the index",
                  ["event"])


def handlers(search: SearchIndexer) -> EventHandlers:
    """The consumer's table: each event type to the rule that applies it."""
    table = EventHandlers()

    async def on_changed(session: AsyncSession, event: EventEnvelope) -> None:
        await search.product_changed(session, event.payload,
                                     schema_version=event.schema_version)
        INDEXED.labels(event.type).inc()

    async def on_deleted(session: AsyncSession, event: EventEnvelope) -> None:
        await search.product_deleted(session, event.payload,
                                     schema_version=event.schema_version)
        INDEXED.labels(event.type).inc()

    async def on_price(session: AsyncSession, event: EventEnvelope) -> None:
        price = PriceChanged.parse(event.payload, schema_version=event.schema_version)
        amount = price.new.amount
        await search.variant_changed(session, price.product_id, price.variant_id,
                                     lambda doc, vid: doc.with_price(vid, amount))
        INDEXED.labels(event.type).inc()

    async def on_stock(session: AsyncSession, event: EventEnvelope) -> None:
        stock = StockChanged.parse(event.payload, schema_version=event.schema_version)
        available = stock.available
        await search.variant_changed(session, stock.product_id, stock.variant_id,
                                     lambda doc, vid: doc.with_available(vid, available))
        INDEXED.labels(event.type).inc()

    async def on_rating(session: AsyncSession, event: EventEnvelope) -> None:
        await search.rating_changed(session, event.payload, event.occurred_at,
                                    schema_version=event.schema_version)
        INDEXED.labels(event.type).inc()

    table.on(RATING_CHANGED)(on_rating)
    table.on(PRODUCT_CREATED)(on_changed)
    table.on(PRODUCT_UPDATED)(on_changed)
    table.on(PRODUCT_DELETED)(on_deleted)
    table.on(PRICE_CHANGED)(on_price)
    table.on(STOCK_CHANGED)(on_stock)
    return table
