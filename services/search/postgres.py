"""PostgreSQL full-text search over the service's own document store.

Matching is the OR of the query's words against a weighted tsvector (name A, brand B,
category C, description D), ranked by ``ts_rank``, so more matched words and words in the
name outrank fewer and words in the description. Only when that finds nothing does the
typo-tolerant pass run: trigram word similarity of each word (three letters or more) against
name, brand and category, so "runing" still finds "running". Both are served by GIN indexes;
keeping the trigram pass out of queries that already match keeps them fast (it would touch
and score most of the catalog for short words), at the price of a second statement for
misspelt ones. Elasticsearch, by contrast, applies its fuzziness to every query.

Autocomplete matches word prefixes (every typed word must begin a word of name, brand or
category) through the trigram index's regular-expression support.

``index`` is a no-op: the consumer writes the store this engine reads, in the same
transaction, so there is no separate index to keep in step and nothing to rebuild.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.db import Database
from services.search.backend import (
    PRICE_RANGES,
    Facets,
    FacetValue,
    SearchQuery,
    SearchResults,
    SortOrder,
    Suggestion,
    hit_of,
    price_facets,
    terms_of,
)
from services.search.documents import ProductDocument
from services.search.repository import document_of, documents

FUZZY_MIN_LENGTH = 3
FACET_VALUES = 20
ATTRIBUTE_NAMES = 10
#: ts_rank weights for D, C, B, A (PostgreSQL's order).
RANK_WEIGHTS = "{0.1, 0.3, 0.6, 1.0}"


class PostgresBackend:
    name = "postgres"

    def __init__(self, database: Database) -> None:
        self.database = database

    async def start(self) -> None:
        """The store is created by the service's migrations."""

    async def close(self) -> None:
        """The database belongs to the service runtime."""

    async def ping(self) -> None:
        await self.database.ping()

    async def refresh(self) -> None:
        """Committed rows are visible at once."""

    async def index(self, documents: Sequence[ProductDocument]) -> None:
        """The consumer already wrote the store this engine searches."""

    async def remove(self, product_id: uuid.UUID, version: int) -> None:
        """The consumer's tombstone already hides it."""

    async def rebuild(self, documents: AsyncIterator[Sequence[ProductDocument]]) -> int:
        """Nothing to rebuild (the tsvector is a generated column); counts what is live."""
        count = 0
        async for batch in documents:
            count += len(batch)
        return count

    async def search(self, query: SearchQuery) -> SearchResults:
        terms = terms_of(query.text)
        async with self.database.session() as session:
            results = await self._search(session, query, terms, fuzzy=False)
            if results.total == 0 and any(len(t) >= FUZZY_MIN_LENGTH for t in terms):
                # Default 0.6: looser lets noise in, tighter loses two-letter typos.
                await session.execute(text(
                    "SELECT set_config('pg_trgm.word_similarity_threshold', '0.6', true)"))
                results = await self._search(session, query, terms, fuzzy=True)
        return results

    async def _search(self, session: AsyncSession, query: SearchQuery, terms: list[str],
                      *, fuzzy: bool) -> SearchResults:
        match, rank = _match_and_rank(terms, query.boost_categories, fuzzy=fuzzy)
        conditions = [documents.c.deleted.is_(False), *_filters(query)]
        if match is not None:
            conditions.append(match)
        where = and_(*conditions)
        page = (select(documents, rank.label("rank")).where(where)
                .order_by(*_order(query, bool(terms), rank))
                .offset(query.offset).limit(query.limit))
        rows = (await session.execute(page)).all()
        facets, total = _facets((await session.execute(_facet_query(where))).all())
        return SearchResults(total=total, hits=[hit_of(document_of(r)) for r in rows],
                             facets=facets)

    async def autocomplete(self, prefix: str, limit: int) -> list[Suggestion]:
        terms = terms_of(prefix)
        if not terms:
            return []
        conditions = [documents.c.fuzzy_text.op("~")(r"\m" + re.escape(term))
                      for term in terms]
        statement = (
            select(documents.c.id, documents.c.name, documents.c.category)
            .where(documents.c.deleted.is_(False), *conditions)
            .order_by(func.lower(documents.c.name).startswith(terms[0]).desc(),
                      func.length(documents.c.name), documents.c.name, documents.c.id)
            .limit(limit))
        async with self.database.session() as session:
            rows = (await session.execute(statement)).all()
        return [Suggestion(id=r.id, name=r.name, category=r.category) for r in rows]


def _match_and_rank(terms: list[str], boost: Sequence[str], *, fuzzy: bool
                    ) -> tuple[ColumnElement[bool] | None, ColumnElement[Any]]:
    boost_rank: ColumnElement[Any] = (
        case((documents.c.category.in_(list(boost)), 0.5), else_=0.0) if boost
        else literal(0.0))
    if not terms:
        return None, boost_rank
    if fuzzy:
        fuzzy_terms = [t for t in terms if len(t) >= FUZZY_MIN_LENGTH]
        similarity: ColumnElement[Any] = literal(0.0)
        for term in fuzzy_terms:
            similarity = similarity + func.word_similarity(term, documents.c.fuzzy_text)
        return (or_(*[literal(t).op("<%")(documents.c.fuzzy_text) for t in fuzzy_terms]),
                similarity + boost_rank)
    tsquery = func.to_tsquery(literal_column("'simple'::regconfig"),
                              " | ".join(_quote(t) for t in terms))
    rank = func.ts_rank(literal_column(f"'{RANK_WEIGHTS}'::float4[]"), documents.c.document,
                        tsquery)
    return documents.c.document.op("@@")(tsquery), rank + boost_rank


def _quote(term: str) -> str:
    """A term as a tsquery lexeme; quoting keeps words such as 'and' or '!' literal."""
    return "'" + term.replace("'", "''").replace("\\", "\\\\") + "'"


def _filters(query: SearchQuery) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if query.categories:
        filters.append(documents.c.category.in_(list(query.categories)))
    if query.brands:
        filters.append(documents.c.brand.in_(list(query.brands)))
    for name, values in query.attributes.items():
        if values:
            filters.append(or_(*[documents.c.attributes.op("@>")(
                func.jsonb_build_object(name, func.jsonb_build_array(value)))
                for value in values]))
    if query.price_min is not None:
        filters.append(documents.c.price_min >= query.price_min)
    if query.price_max is not None:
        filters.append(documents.c.price_min <= query.price_max)
    if query.in_stock is not None:
        filters.append(documents.c.in_stock.is_(query.in_stock))
    return filters or [~false()]


def _order(query: SearchQuery, has_text: bool, rank: ColumnElement[Any]) -> list[Any]:
    sort = query.sort
    if sort is SortOrder.RELEVANCE and not has_text:
        sort = SortOrder.NEWEST
    if sort is SortOrder.RELEVANCE:
        first = [rank.desc()]
    elif sort is SortOrder.PRICE_ASC:
        first = [documents.c.price_min.asc().nulls_last()]
    elif sort is SortOrder.PRICE_DESC:
        first = [documents.c.price_min.desc().nulls_last()]
    else:
        first = [documents.c.created_at.desc()]
    return [*first, documents.c.id]


def _facet_query(where: ColumnElement[bool]) -> Select[Any]:
    """Every facet's counts in one round trip: (kind, name, value, count) rows."""
    matched = (select(documents.c.category, documents.c.brand, documents.c.price_min,
                      documents.c.attributes).where(where).cte("matched"))
    bucket = case(*[(and_(*([matched.c.price_min >= r.low] if r.low is not None else []),
                          *([matched.c.price_min < r.high] if r.high is not None else [])),
                     r.key) for r in PRICE_RANGES])
    attribute = func.jsonb_each(matched.c.attributes).table_valued("key", "value").lateral()
    value = func.jsonb_array_elements_text(attribute.c.value).table_valued("value").lateral()
    parts = [
        select(literal("category"), matched.c.category, literal(""), func.count())
        .group_by(matched.c.category),
        select(literal("brand"), matched.c.brand, literal(""), func.count())
        .where(matched.c.brand.is_not(None)).group_by(matched.c.brand),
        select(literal("price"), bucket, literal(""), func.count())
        .where(matched.c.price_min.is_not(None)).group_by(bucket),
        select(literal("attribute"), attribute.c.key, value.c.value, func.count())
        .select_from(matched).join(attribute, literal(True)).join(value, literal(True))
        .group_by(attribute.c.key, value.c.value),
    ]
    return union_all(*parts)  # type: ignore[return-value]


def _top(counts: dict[str, int], size: int) -> list[FacetValue]:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:size]
    return [FacetValue(value=value, count=count) for value, count in ordered]


def _facets(rows: Sequence[Any]) -> tuple[Facets, int]:
    """Ordered as Elasticsearch's terms aggregation orders: count desc, then value."""
    categories: dict[str, int] = {}
    brands: dict[str, int] = {}
    prices: dict[str, int] = {}
    attributes: dict[str, dict[str, int]] = {}
    for kind, name, value, count in rows:
        if kind == "category":
            categories[name] = count
        elif kind == "brand":
            brands[name] = count
        elif kind == "price" and name is not None:
            prices[name] = count
        elif kind == "attribute":
            attributes.setdefault(name, {})[value] = count
    names = sorted(attributes, key=lambda n: (-sum(attributes[n].values()), n))
    return Facets(
        category=_top(categories, FACET_VALUES), brand=_top(brands, FACET_VALUES),
        price=price_facets(prices),
        attributes={n: _top(attributes[n], FACET_VALUES) for n in names[:ATTRIBUTE_NAMES]},
    ), sum(categories.values())
