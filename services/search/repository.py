"""The document store and the analytics tables: every SQL statement of the service.

Writes are version-guarded upserts, so applying events twice, or out of order, leaves the
newest version: an older ``product.updated`` (or one arriving after the tombstone of a
delete) changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, func, select, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.db import Database
from services.search.documents import ProductDocument
from services.search.models import (
    Base,
    SearchClickRow,
    SearchDocumentRow,
    SearchQueryRow,
    SearchRatingRow,
)


def _table(model: type[Base]) -> Table:
    """The model's table, as the ``Table`` it is (``__table__`` is typed ``FromClause``)."""
    return Base.metadata.tables[model.__tablename__]


documents = _table(SearchDocumentRow)
queries = _table(SearchQueryRow)
clicks = _table(SearchClickRow)
ratings = _table(SearchRatingRow)


def row_values(document: ProductDocument) -> dict[str, Any]:
    data = document.model_dump(mode="json")
    return {
        "id": document.id, "version": document.version, "deleted": False,
        "name": document.name, "description": document.description,
        "category": document.category, "brand": document.brand,
        "attributes": data["attributes"], "variants": data["variants"],
        "images": data["images"], "attribute_pairs": document.attribute_pairs,
        "rating": document.rating, "rating_count": document.rating_count,
        "price_min": document.price_min,
        "price_max": document.price_max, "currency": document.currency,
        "in_stock": document.in_stock, "created_at": document.created_at,
        "updated_at": document.updated_at, "changed_at": func.clock_timestamp(),
    }


def document_of(row: Any) -> ProductDocument:
    return ProductDocument(
        id=row.id, version=row.version, name=row.name, description=row.description,
        category=row.category, brand=row.brand, attributes=row.attributes,
        variants=row.variants, images=row.images, created_at=row.created_at,
        updated_at=row.updated_at, rating=row.rating, rating_count=row.rating_count)


async def save(session: AsyncSession, document: ProductDocument,
               *, same_version: bool = True) -> bool:
    """Upsert unless the stored version is newer (or, without ``same_version``, as new).

    ``same_version`` lets price and stock changes, which do not bump the product's
    version, rewrite the row; a whole-product event needs a strictly newer version.
    """
    values = row_values(document)
    statement = insert(documents).values(**values)
    guard = (documents.c.version <= statement.excluded.version if same_version
             else documents.c.version < statement.excluded.version)
    upsert = statement.on_conflict_do_update(
        index_elements=[documents.c.id],
        set_={k: statement.excluded[k] for k in values if k != "id"},
        where=guard,
    ).returning(documents.c.id)
    return (await session.execute(upsert)).first() is not None


async def tombstone(session: AsyncSession, product_id: uuid.UUID, version: int,
                    category: str) -> bool:
    """Mark deleted, keeping the version so older events stay ignored."""
    now = func.clock_timestamp()
    statement = insert(documents).values(
        id=product_id, version=version, deleted=True, name="", category=category,
        created_at=now, updated_at=now, changed_at=now)
    upsert = statement.on_conflict_do_update(
        index_elements=[documents.c.id],
        set_={"version": statement.excluded.version, "deleted": True, "changed_at": now},
        where=documents.c.version <= statement.excluded.version,
    ).returning(documents.c.id)
    return (await session.execute(upsert)).first() is not None


async def live_document(session: AsyncSession, product_id: uuid.UUID,
                        *, for_update: bool = False) -> ProductDocument | None:
    statement = select(documents).where(documents.c.id == product_id,
                                        documents.c.deleted.is_(False))
    if for_update:
        statement = statement.with_for_update()
    row = (await session.execute(statement)).first()
    return None if row is None else document_of(row)


async def with_rating(session: AsyncSession, document: ProductDocument) -> ProductDocument:
    """The document carrying the product's latest known rating (product events have none)."""
    row = (await session.execute(select(ratings.c.rating, ratings.c.rating_count)
                                 .where(ratings.c.product_id == document.id))).first()
    if row is None:
        return document
    return document.model_copy(update={"rating": row.rating,
                                       "rating_count": row.rating_count})


async def save_rating(session: AsyncSession, product_id: uuid.UUID, rating: float | None,
                      count: int, rated_at: datetime) -> bool:
    """Keep the newest summary per product; False when a newer one is already kept (a
    redelivered or overtaken event)."""
    statement = insert(ratings).values(product_id=product_id, rating=rating,
                                       rating_count=count, rated_at=rated_at)
    upsert = statement.on_conflict_do_update(
        index_elements=[ratings.c.product_id],
        set_={"rating": statement.excluded.rating,
              "rating_count": statement.excluded.rating_count,
              "rated_at": statement.excluded.rated_at},
        where=ratings.c.rated_at <= statement.excluded.rated_at,
    ).returning(ratings.c.product_id)
    return (await session.execute(upsert)).first() is not None


async def rate_document(session: AsyncSession, product_id: uuid.UUID, rating: float | None,
                        count: int) -> ProductDocument | None:
    """Put the rating on the live document, if the store has it; the updated document."""
    row = (await session.execute(
        update(documents).where(documents.c.id == product_id, documents.c.deleted.is_(False))
        .values(rating=rating, rating_count=count, changed_at=func.clock_timestamp())
        .returning(*documents.c))).first()
    return None if row is None else document_of(row)


async def is_empty(database: Database) -> bool:
    """True when the store has never held a product (not even a tombstone)."""
    async with database.session() as session:
        return (await session.execute(select(documents.c.id).limit(1))).first() is None


async def live_batches(database: Database, *, batch_size: int = 500,
                       changed_since: datetime | None = None
                       ) -> AsyncIterator[Sequence[ProductDocument]]:
    """Every live document (or those changed since a moment), in id order, by keyset pages
    so a large catalog is never held in memory or in one long transaction."""
    after: uuid.UUID | None = None
    while True:
        condition: ColumnElement[bool] = documents.c.deleted.is_(False)
        if changed_since is not None:
            condition = and_(condition, documents.c.changed_at >= changed_since)
        if after is not None:
            condition = and_(condition, documents.c.id > after)
        async with database.session() as session:
            rows = (await session.execute(
                select(documents).where(condition).order_by(documents.c.id).limit(batch_size)
            )).all()
        if not rows:
            return
        yield [document_of(row) for row in rows]
        after = rows[-1].id


async def deleted_since(database: Database, since: datetime) -> list[tuple[uuid.UUID, int]]:
    async with database.session() as session:
        rows = (await session.execute(
            select(documents.c.id, documents.c.version)
            .where(documents.c.deleted.is_(True), documents.c.changed_at >= since))).all()
    return [(row.id, row.version) for row in rows]


async def database_now(database: Database) -> datetime:
    """The database's clock: rebuild windows are compared with ``changed_at``, its time."""
    async with database.session() as session:
        return (await session.execute(select(func.clock_timestamp()))).scalar_one()


# -- analytics -------------------------------------------------------------------------------


async def record_query(session: AsyncSession, query_id: uuid.UUID, text: str,
                       normalized: str, filtered: bool, results: int,
                       user_id: str | None) -> None:
    await session.execute(insert(queries).values(
        id=query_id, query=text[:500], normalized=normalized[:500], filtered=filtered,
        results=results, user_id=user_id))


async def record_click(session: AsyncSession, query_id: uuid.UUID, product_id: uuid.UUID,
                       position: int) -> bool:
    """False when the search is unknown; a repeated click is accepted and counted once."""
    known = (await session.execute(
        select(queries.c.id).where(queries.c.id == query_id))).first()
    if known is None:
        return False
    await session.execute(insert(clicks).values(
        query_id=query_id, product_id=product_id, position=position
    ).on_conflict_do_nothing(index_elements=[clicks.c.query_id, clicks.c.product_id]))
    return True


async def recent_categories(session: AsyncSession, user_id: str, limit: int = 3,
                            clicks_considered: int = 50) -> list[str]:
    """The categories of what the user clicked lately, most clicked first."""
    recent = (
        select(documents.c.category)
        .select_from(clicks.join(queries, queries.c.id == clicks.c.query_id)
                     .join(documents, documents.c.id == clicks.c.product_id))
        .where(queries.c.user_id == user_id)
        .order_by(clicks.c.created_at.desc()).limit(clicks_considered).subquery()
    )
    rows = (await session.execute(
        select(recent.c.category, func.count().label("n")).group_by(recent.c.category)
        .order_by(func.count().desc(), recent.c.category).limit(limit))).all()
    return [row.category for row in rows]


async def query_report(session: AsyncSession, since: datetime, limit: int) -> dict[str, Any]:
    """Top queries, top zero-result queries and click-through, over searches with text."""
    with_text = and_(queries.c.created_at >= since, queries.c.normalized != "")
    clicked = (select(clicks.c.query_id).distinct().subquery())
    totals = (await session.execute(
        select(func.count(), func.count().filter(queries.c.results == 0),
               func.count(clicked.c.query_id))
        .select_from(queries.outerjoin(clicked, clicked.c.query_id == queries.c.id))
        .where(with_text))).one()
    per_query = (
        select(queries.c.normalized, func.count().label("searches"),
               func.count(clicked.c.query_id).label("clicked"),
               func.avg(queries.c.results).label("avg_results"))
        .select_from(queries.outerjoin(clicked, clicked.c.query_id == queries.c.id))
        .where(with_text).group_by(queries.c.normalized)
    )
    top = (await session.execute(
        per_query.order_by(func.count().desc(), queries.c.normalized).limit(limit))).all()
    zero = (await session.execute(
        select(queries.c.normalized, func.count().label("searches"))
        .where(with_text, queries.c.results == 0, true())
        .group_by(queries.c.normalized)
        .order_by(func.count().desc(), queries.c.normalized).limit(limit))).all()
    return {
        "searches": totals[0], "zero_result_searches": totals[1],
        "searches_with_click": totals[2],
        "top_queries": [{"query": r.normalized, "searches": r.searches, "clicked": r.clicked,
                         "average_results": float(r.avg_results or 0)} for r in top],
        "zero_result_queries": [{"query": r.normalized, "searches": r.searches}
                                for r in zero],
    }
