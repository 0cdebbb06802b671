"""PostgreSQL full-text search over the service's own document store.

Matching is the OR of the query's words against a weighted tsvector (name A, brand B,
category C, description D), ranked by ``ts_rank``, so more matched words and words in the
name outrank fewer and words in the description. Only when that finds nothing does the
typo-tolerant pass run: trigram word similarity of each word (three letters or more) against
name, brand and category, so "runing" still finds "running". Both are served by GIN indexes;
keeping the trigram pass out of queries that already match keeps them fast (it would touch
and score most of the catalog for short words), at the price of a second statement for
misspelt ones (Elasticsearch does the same).

A word common in the catalog can match half of it, and ranking, counting and faceting all of
that costs hundreds of milliseconds at 100k products. So a search works on a bounded
candidate set: the strong matches first (every word in name, brand or category), then the
rest, at most :data:`~services.search.backend.FACET_CANDIDATES`; ranking, facets and the
total use those (a full set is reported as "at least", never counted further). Below that
size everything is exact. Orders
other than relevance read the page straight from all matches, through the ``price_min``,
``created_at`` and ``rating`` indexes. Facets unnest ``attribute_pairs`` (a text array)
rather than walking each row's JSON.

Autocomplete matches word prefixes (every typed word must begin a word of name, brand or
category) through the trigram index's regular-expression support.

``index`` is a no-op: the consumer writes the store this engine reads, in the same
transaction, so there is no separate index to keep in step and nothing to rebuild.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from sqlalchemy import (
    CTE,
    ColumnElement,
    CompoundSelect,
    Select,
    Text,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.db import Database
from services.search.backend import (
    FACET_CANDIDATES,
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

    async def needs_rebuild(self) -> bool:
        """The store is the index."""
        return False

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
            # These statements take milliseconds; the planner's cost guesses can still cross
            # JIT's threshold, and compiling would then cost a hundred times the query.
            await session.execute(text("SET LOCAL jit = off"))
            results = await self._search(session, query, terms, fuzzy=False)
            if results.total == 0 and any(len(t) >= FUZZY_MIN_LENGTH for t in terms):
                # Default 0.6: looser lets noise in, tighter loses two-letter typos.
                await session.execute(text(
                    "SELECT set_config('pg_trgm.word_similarity_threshold', '0.6', true)"))
                results = await self._search(session, query, terms, fuzzy=True)
        return results

    async def _search(self, session: AsyncSession, query: SearchQuery, terms: list[str],
                      *, fuzzy: bool) -> SearchResults:
        """Two statements.

        1. From a bounded candidate set (the best matches, at most ``window`` rows): every
           facet's counts, how many candidates there were and, when ranking by relevance,
           the page's ids in order.
        2. The page's documents: by id, or for the other orders an exact ordered scan of
           all matches (an index walk that stops after the page).
        """
        match, strong, rank = _match_and_rank(terms, query.boost_categories, fuzzy=fuzzy)
        conditions = [documents.c.deleted.is_(False), *_filters(query)]
        if match is not None:
            conditions.append(match)
        window = max(FACET_CANDIDATES, query.offset + query.limit)
        candidates = _candidates(conditions, match, strong, rank, window)
        by_relevance = query.sort is SortOrder.RELEVANCE and bool(terms)
        summary = (await session.execute(
            _summary_query(candidates, query if by_relevance else None))).all()
        facets, matched, page_ids = _facets(summary)
        if by_relevance:
            rows = (await session.execute(
                select(documents).where(documents.c.id.in_(page_ids)))).all() if page_ids else []
            position = {pid: i for i, pid in enumerate(page_ids)}
            rows = sorted(rows, key=lambda r: position[r.id])
        else:
            rows = (await session.execute(
                select(documents).where(and_(*conditions))
                .order_by(*_order(query, bool(terms), rank))
                .offset(query.offset).limit(query.limit))).all()
        # A full window means there are more matches than it holds: say so rather than
        # count them (counting is what made searches of common words slow).
        relation: Literal["eq", "gte"] = "gte" if matched >= window else "eq"
        return SearchResults(total=matched, total_relation=relation,
                             hits=[hit_of(document_of(r)) for r in rows], facets=facets,
                             facets_exact=matched < window)

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
                    ) -> tuple[ColumnElement[bool] | None, ColumnElement[bool] | None,
                               ColumnElement[Any]]:
    """What matches, what matches strongly (every word in name, brand or category: the
    candidates taken first when there are too many to rank them all) and the rank."""
    boost_rank: ColumnElement[Any] = (
        case((documents.c.category.in_(list(boost)), 0.5), else_=0.0) if boost
        else literal(0.0))
    if not terms:
        return None, None, boost_rank
    if fuzzy:
        fuzzy_terms = [t for t in terms if len(t) >= FUZZY_MIN_LENGTH]
        similarity: ColumnElement[Any] = literal(0.0)
        for term in fuzzy_terms:
            similarity = similarity + func.word_similarity(term, documents.c.fuzzy_text)
        return (or_(*[literal(t).bool_op("<%")(documents.c.fuzzy_text) for t in fuzzy_terms]),
                None, similarity + boost_rank)
    tsquery = _tsquery(" | ".join(_quote(t) for t in terms))
    every_word = _tsquery(" & ".join(_quote(t) for t in terms))
    rank = func.ts_rank(literal_column(f"'{RANK_WEIGHTS}'::float4[]"), documents.c.document,
                        tsquery)
    return (documents.c.document.bool_op("@@")(tsquery),
            documents.c.title.bool_op("@@")(every_word), rank + boost_rank)


def _tsquery(expression: str) -> ColumnElement[Any]:
    return func.to_tsquery(literal_column("'simple'::regconfig"), expression)


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
            filters.append(documents.c.attribute_pairs.overlap(
                cast(array([f"{name}:{value}" for value in values]), ARRAY(Text))))
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
    elif sort is SortOrder.RATING:
        first = [documents.c.rating.desc().nulls_last(), documents.c.rating_count.desc()]
    else:
        first = [documents.c.created_at.desc()]
    return [*first, documents.c.id]


def _candidates(conditions: list[ColumnElement[bool]], match: ColumnElement[bool] | None,
                strong: ColumnElement[bool] | None, rank: ColumnElement[Any], window: int
                ) -> CTE:
    """At most ``window`` matches with what facets and ranking need.

    Strong matches come first (PostgreSQL stops reading once the window is full, so the
    weaker tier is not even scanned then); below the window every match is a candidate and
    the search is exact.
    """
    columns = [documents.c.id, documents.c.category, documents.c.brand, documents.c.price_min,
               documents.c.attribute_pairs, rank.label("rank")]
    if strong is None:
        return select(*columns).where(*conditions).limit(window).cte("candidates")
    # A strong match is a match; leaving ``match`` out of the first tier spares PostgreSQL
    # intersecting it with the (much larger) bitmap of every row having any of the words.
    base = [c for c in conditions if c is not match]
    tiers = union_all(select(*columns).where(*base, strong).limit(window),
                      select(*columns).where(*conditions, ~strong).limit(window)).subquery()
    return select(tiers).limit(window).cte("candidates")


def _summary_query(matched: CTE, page: SearchQuery | None
                   ) -> CompoundSelect[str, str, str, int]:
    """Every facet's counts, the candidates' count and (with ``page``) the page's ids by
    rank, in one round trip: (kind, name, value, count) rows."""
    bucket = case(*[(and_(*([matched.c.price_min >= r.low] if r.low is not None else []),
                          *([matched.c.price_min < r.high] if r.high is not None else [])),
                     r.key) for r in PRICE_RANGES])
    pairs = select(func.unnest(matched.c.attribute_pairs).label("pair")).subquery()
    empty = literal("")
    parts: list[Select[str, str, str, int]] = [
        select(literal("total"), empty, empty, func.count()).select_from(matched),
        select(literal("category"), matched.c.category, empty, func.count())
        .group_by(matched.c.category),
        select(literal("brand"), matched.c.brand, empty, func.count())
        .where(matched.c.brand.is_not(None)).group_by(matched.c.brand),
        select(literal("price"), bucket, empty, func.count())
        .where(matched.c.price_min.is_not(None)).group_by(bucket),
        select(literal("attribute"), pairs.c.pair, empty, func.count())
        .group_by(pairs.c.pair),
    ]
    if page is not None:
        ranked = (select(matched.c.id, matched.c.rank)
                  .order_by(matched.c.rank.desc(), matched.c.id)
                  .offset(page.offset).limit(page.limit).subquery())
        parts.append(select(literal("hit"), cast(ranked.c.id, Text), empty,
                            func.row_number().over(order_by=(ranked.c.rank.desc(),
                                                              ranked.c.id))))
    return union_all(*parts)


def _top(counts: dict[str, int], size: int) -> list[FacetValue]:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:size]
    return [FacetValue(value=value, count=count) for value, count in ordered]


def _facets(rows: Sequence[Any]) -> tuple[Facets, int, list[uuid.UUID]]:
    """Facets (ordered as Elasticsearch's terms aggregation orders: count desc, then value),
    the candidates' count and the page's ids in rank order."""
    categories: dict[str, int] = {}
    brands: dict[str, int] = {}
    prices: dict[str, int] = {}
    attributes: dict[str, dict[str, int]] = {}
    hits: list[tuple[int, uuid.UUID]] = []
    total = 0
    for kind, name, _value, count in rows:
        if kind == "total":
            total = count
        elif kind == "category":
            categories[name] = count
        elif kind == "brand":
            brands[name] = count
        elif kind == "price" and name is not None:
            prices[name] = count
        elif kind == "attribute":
            attribute, _, value = name.partition(":")
            attributes.setdefault(attribute, {})[value] = count
        elif kind == "hit":
            hits.append((count, uuid.UUID(name)))
    names = sorted(attributes, key=lambda n: (-sum(attributes[n].values()), n))
    return Facets(
        category=_top(categories, FACET_VALUES), brand=_top(brands, FACET_VALUES),
        price=price_facets(prices),
        attributes={n: _top(attributes[n], FACET_VALUES) for n in names[:ATTRIBUTE_NAMES]},
    ), total, [pid for _, pid in sorted(hits)]
