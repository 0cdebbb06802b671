"""Elasticsearch: queries go through an alias, and a rebuild fills a new index behind it.

The mapping is designed for the node's built-in analysis only (no ``analysis-common``
module, so no edge n-grams or synonyms; no ``mapper-extras``, so no ``search_as_you_type``):

* ``name``, ``description`` and the ``.text`` sub-fields of ``brand`` and ``category`` are
  ``text`` with the standard analyzer; full-text search is a ``multi_match`` over them with
  boosts (name ≫ brand > category > description) and ``fuzziness: AUTO`` for typos.
* ``category``, ``brand``, ``currency`` are ``keyword`` (filters and facets), ``price_min``
  and ``price_max`` are ``long`` minor units (range filter and range facet), ``in_stock`` a
  boolean.
* ``attribute_pairs`` is a ``keyword`` of ``name:value`` strings, so "colour = red" matches
  the pair and not a red something with some other colour; filters are ``terms`` on it and
  facets one ``terms`` aggregation split by name (a nested mapping did the same at several
  times the cost: one hidden document per pair).
* ``rating`` / ``rating_count`` come from the review service (sort ``rating``).
* ``suggest`` (name, brand, category) is ``text`` with ``index_prefixes``, queried with
  ``match_bool_prefix``: autocomplete from prefix terms indexed at write time.

Queries are kept lean: filters in filter context, typo-tolerant (fuzzy) matching only when
the exact words find nothing (fuzziness on every query multiplied its cost), facets over the
best :data:`~services.search.backend.FACET_CANDIDATES` matches (a ``sampler``), totals
counted up to as many (or the page asked for), and the shard request cache on
(invalidated by every refresh). The mapping carries a version in ``_meta``; an index built
with an older one is reported by :meth:`ElasticsearchBackend.start` so the service rebuilds.

Writes use the product version with ``version_type=external_gte``: an older version never
overwrites a newer one, and price/stock changes (same version) still land.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, ConflictError, NotFoundError
from elasticsearch.helpers import async_bulk

from services.search.backend import (
    FACET_CANDIDATES,
    PRICE_RANGES,
    Facets,
    FacetValue,
    Hit,
    PriceFacet,
    SearchQuery,
    SearchResults,
    SortOrder,
    Suggestion,
    terms_of,
)
from services.search.documents import ProductDocument

log = logging.getLogger(__name__)

FACET_VALUES = 20
ATTRIBUTE_NAMES = 10
#: Distinct name:value pairs one facet aggregation returns before they are split by name.
ATTRIBUTE_PAIRS = 1000
FUZZY_MIN_LENGTH = 3
#: Bump when MAPPING changes: a live index with another version is rebuilt at start-up.
MAPPING_VERSION = 2

SETTINGS: dict[str, Any] = {
    "number_of_shards": 1,
    "number_of_replicas": 0,
    "max_result_window": 10_000,
}

MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "_meta": {"mapping_version": MAPPING_VERSION},
    "properties": {
        "id": {"type": "keyword"},
        "name": {"type": "text", "fields": {"sort": {"type": "keyword", "ignore_above": 256}}},
        "description": {"type": "text"},
        "category": {"type": "keyword", "fields": {"text": {"type": "text"}}},
        "brand": {"type": "keyword", "fields": {"text": {"type": "text"}}},
        "attribute_pairs": {"type": "keyword"},
        "rating": {"type": "float"},
        "rating_count": {"type": "integer"},
        "price_min": {"type": "long"},
        "price_max": {"type": "long"},
        "currency": {"type": "keyword"},
        "in_stock": {"type": "boolean"},
        "image": {"type": "keyword", "index": False, "doc_values": False},
        "created_at": {"type": "date"},
        "suggest": {"type": "text", "index_prefixes": {"min_chars": 1, "max_chars": 10}},
    },
}

SEARCH_FIELDS = ["name^4", "brand.text^2", "category.text^1.5", "description"]


def source_of(document: ProductDocument) -> dict[str, Any]:
    return {
        "id": str(document.id), "name": document.name, "description": document.description,
        "category": document.category, "brand": document.brand,
        "attribute_pairs": document.attribute_pairs,
        "rating": document.rating, "rating_count": document.rating_count,
        "price_min": document.price_min, "price_max": document.price_max,
        "currency": document.currency, "in_stock": document.in_stock,
        "image": document.images[0] if document.images else None,
        "created_at": document.created_at.isoformat(),
        "suggest": " ".join(p for p in (document.name, document.brand, document.category) if p),
    }


class ElasticsearchBackend:
    name = "elasticsearch"

    def __init__(self, url: str, alias: str, *, timeout: float = 5.0) -> None:
        hosts = [part.strip() for part in url.split(",") if part.strip()]
        self.client = AsyncElasticsearch(hosts, request_timeout=timeout, retry_on_timeout=True,
                                         max_retries=2)
        self.alias = alias
        self._retired: list[str] = []
        #: Set by start(): the live index was built with another mapping version.
        self.stale_mapping = False

    async def start(self) -> None:
        """Create the first index behind the alias unless the alias exists; note whether an
        existing one has the current mapping."""
        if await self.client.indices.exists_alias(name=self.alias):
            mappings = (await self.client.indices.get_mapping(index=self.alias)).body
            versions = {(m.get("mappings", {}).get("_meta") or {}).get("mapping_version")
                        for m in mappings.values()}
            self.stale_mapping = versions != {MAPPING_VERSION}
            if self.stale_mapping:
                # Until the rebuild switches the alias, the old index keeps taking writes:
                # give it the new fields (additions only) so documents carrying them are
                # not refused by its strict mapping.
                try:
                    await self.client.indices.put_mapping(index=self.alias,
                                                          properties=MAPPING["properties"])
                except ApiError as exc:
                    log.warning("could not add the new fields to %s (%s); writes may be "
                                "refused until its rebuild", self.alias, exc)
        else:
            index = self._new_index_name()
            await self._create_index(index)
            try:
                await self.client.indices.update_aliases(actions=[
                    {"add": {"index": index, "alias": self.alias, "is_write_index": True}}])
            except Exception:
                await self.client.indices.delete(index=index, ignore_unavailable=True)
                raise

    async def close(self) -> None:
        await self.client.close()

    async def ping(self) -> None:
        # GET / is not served by every node (see the module docstring); health is.
        await self.client.cluster.health(index=self.alias, timeout="2s")

    async def refresh(self) -> None:
        await self.client.indices.refresh(index=self.alias)

    async def needs_rebuild(self) -> bool:
        if self.stale_mapping:
            return True
        return int((await self.client.count(index=self.alias)).body["count"]) == 0

    async def index(self, documents: Sequence[ProductDocument]) -> None:
        await self._bulk_index(self.alias, documents)

    async def remove(self, product_id: uuid.UUID, version: int) -> None:
        # NotFound: already gone; Conflict: a newer version is there.
        with contextlib.suppress(NotFoundError, ConflictError):
            await self.client.delete(index=self.alias, id=str(product_id), version=version,
                                     version_type="external_gte")

    async def _bulk_index(self, index: str, documents: Sequence[ProductDocument]) -> None:
        if not documents:
            return
        actions = [{"_op_type": "index", "_index": index, "_id": str(d.id),
                    "version": d.version, "version_type": "external_gte",
                    "_source": source_of(d)} for d in documents]
        _, errors = await async_bulk(self.client, actions, raise_on_error=False,
                                     raise_on_exception=True)
        assert isinstance(errors, list)  # without stats_only: the errors, not their count
        failed = [e for e in errors if _status(e) != 409]  # 409: a newer version is there
        if failed:
            raise RuntimeError(f"{len(failed)} document(s) were not indexed: {failed[:3]}")

    def _new_index_name(self) -> str:
        return f"{self.alias}-{time.time_ns()}"

    async def _create_index(self, index: str, refresh_interval: str = "1s") -> None:
        await self.client.indices.create(
            index=index, settings={**SETTINGS, "refresh_interval": refresh_interval},
            mappings=MAPPING)

    async def rebuild(self, documents: AsyncIterator[Sequence[ProductDocument]]) -> int:
        """Fill a new index, then move the alias to it in one atomic alias update.

        Queries keep reading the old index until the switch and the new one after it; no
        moment has the alias pointing at nothing or at both. Writes arriving meanwhile go to
        the old index; the caller replays what changed during the build (see
        :func:`services.search.service.SearchService.rebuild`).
        """
        index = self._new_index_name()
        # No refreshes while bulk loading (nobody reads the new index yet): much faster.
        await self._create_index(index, refresh_interval="-1")
        count = 0
        try:
            async for batch in documents:
                await self._bulk_index(index, batch)
                count += len(batch)
            await self.client.indices.put_settings(index=index,
                                                   settings={"refresh_interval": "1s"})
            await self.client.indices.refresh(index=index)
            old = list((await self.client.indices.get_alias(name=self.alias)).body)
            await self.client.indices.update_aliases(actions=[
                *[{"remove": {"index": name, "alias": self.alias}} for name in old],
                {"add": {"index": index, "alias": self.alias, "is_write_index": True}},
            ])
        except BaseException:
            await self.client.indices.delete(index=index, ignore_unavailable=True)
            raise
        self._retired = old
        self.stale_mapping = False
        return count

    async def drop_retired(self) -> None:
        """Delete the indices a rebuild switched away from (after the catch-up)."""
        for name in self._retired:
            await self.client.indices.delete(index=name, ignore_unavailable=True)
        self._retired = []

    async def search(self, query: SearchQuery) -> SearchResults:
        terms = terms_of(query.text)
        # As in PostgreSQL: totals and facets cover the best ``window`` matches.
        window = max(FACET_CANDIDATES, query.offset + query.limit)
        body = await self._search(query, terms, window, fuzzy=False)
        if (body["hits"]["total"]["value"] == 0
                and any(len(t) >= FUZZY_MIN_LENGTH for t in terms)):
            body = await self._search(query, terms, window, fuzzy=True)
        total = body["hits"]["total"]
        sample = body["aggregations"]["best"]
        return SearchResults(
            total=total["value"], total_relation=total["relation"],
            hits=[_hit(h["_source"]) for h in body["hits"].get("hits", [])],
            facets=_facets(sample), facets_exact=total["relation"] == "eq"
            and total["value"] == sample["doc_count"])

    async def _search(self, query: SearchQuery, terms: list[str], window: int, *,
                      fuzzy: bool) -> dict[str, Any]:
        must: list[dict[str, Any]] = []
        should: list[dict[str, Any]] = []
        if terms:
            match: dict[str, Any] = {"query": " ".join(terms), "fields": SEARCH_FIELDS,
                                     "type": "best_fields", "operator": "or"}
            if fuzzy:
                match.update(fuzziness="AUTO", prefix_length=0, max_expansions=20)
            must.append({"multi_match": match})
            if query.boost_categories:
                should.append({"terms": {"category": list(query.boost_categories),
                                         "boost": 2.0}})
        body_query = {"bool": {"must": must or [{"match_all": {}}], "should": should,
                               "filter": _filters(query)}}
        response = await self.client.search(
            index=self.alias, query=body_query, sort=_sort(query, bool(terms)),
            from_=query.offset, size=query.limit, track_total_hits=window,
            aggs=_aggregations(window), request_cache=True,
            # Only what is read: less JSON for the node to write and the client to parse.
            filter_path=["hits.total", "hits.hits._source", "aggregations"],
            source_includes=["id", "name", "category", "brand", "price_min", "price_max",
                             "currency", "in_stock", "image", "rating", "rating_count"])
        return response.body

    async def autocomplete(self, prefix: str, limit: int) -> list[Suggestion]:
        terms = terms_of(prefix)
        if not terms:
            return []
        response = await self.client.search(
            index=self.alias, size=limit,
            query={"match_bool_prefix": {"suggest": {"query": " ".join(terms),
                                                     "operator": "and"}}},
            sort=["_score", {"name.sort": "asc"}, {"id": "asc"}],
            source_includes=["id", "name", "category"])
        return [Suggestion(id=h["_source"]["id"], name=h["_source"]["name"],
                           category=h["_source"]["category"])
                for h in response.body["hits"]["hits"]]


def _status(error: dict[str, Any]) -> int:
    for item in error.values():
        return int(item.get("status", 0))
    return 0


def _filters(query: SearchQuery) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = []
    if query.categories:
        filters.append({"terms": {"category": list(query.categories)}})
    if query.brands:
        filters.append({"terms": {"brand": list(query.brands)}})
    for name, values in query.attributes.items():
        if values:
            filters.append({"terms": {"attribute_pairs": [f"{name}:{v}" for v in values]}})
    price: dict[str, int] = {}
    if query.price_min is not None:
        price["gte"] = query.price_min
    if query.price_max is not None:
        price["lte"] = query.price_max
    if price:
        filters.append({"range": {"price_min": price}})
    if query.in_stock is not None:
        filters.append({"term": {"in_stock": query.in_stock}})
    return filters


def _sort(query: SearchQuery, has_text: bool) -> list[Any]:
    sort = query.sort
    if sort is SortOrder.RELEVANCE and not has_text:
        sort = SortOrder.NEWEST
    if sort is SortOrder.RELEVANCE:
        first: list[Any] = ["_score"]
    elif sort is SortOrder.PRICE_ASC:
        first = [{"price_min": {"order": "asc", "missing": "_last"}}]
    elif sort is SortOrder.PRICE_DESC:
        first = [{"price_min": {"order": "desc", "missing": "_last"}}]
    elif sort is SortOrder.RATING:
        first = [{"rating": {"order": "desc", "missing": "_last"}}, {"rating_count": "desc"}]
    else:
        first = [{"created_at": "desc"}]
    return [*first, {"id": "asc"}]


def _aggregations(window: int) -> dict[str, Any]:
    """Every facet, over the best ``window`` matches (the sampler takes the top-scoring
    documents; when fewer match, that is all of them)."""
    ranges = []
    for r in PRICE_RANGES:
        bucket: dict[str, Any] = {"key": r.key}
        if r.low is not None:
            bucket["from"] = r.low
        if r.high is not None:
            bucket["to"] = r.high
        ranges.append(bucket)
    return {"best": {"sampler": {"shard_size": window}, "aggs": {
        "category": {"terms": {"field": "category", "size": FACET_VALUES}},
        "brand": {"terms": {"field": "brand", "size": FACET_VALUES}},
        "price": {"range": {"field": "price_min", "ranges": ranges, "keyed": False}},
        "attributes": {"terms": {"field": "attribute_pairs", "size": ATTRIBUTE_PAIRS}},
    }}}


def _values(buckets: list[dict[str, Any]]) -> list[FacetValue]:
    return [FacetValue(value=str(b["key"]), count=b["doc_count"]) for b in buckets]


def _top(counts: dict[str, int]) -> list[FacetValue]:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:FACET_VALUES]
    return [FacetValue(value=value, count=count) for value, count in ordered]


def _facets(aggregations: dict[str, Any]) -> Facets:
    """Attribute pairs are split by name; names are ordered by how many values they count,
    as the PostgreSQL engine orders them."""
    by_key = {r.key: r for r in PRICE_RANGES}
    attributes: dict[str, dict[str, int]] = {}
    for b in aggregations["attributes"]["buckets"]:
        name, _, value = str(b["key"]).partition(":")
        attributes.setdefault(name, {})[value] = b["doc_count"]
    names = sorted(attributes, key=lambda n: (-sum(attributes[n].values()), n))
    return Facets(
        category=_values(aggregations["category"]["buckets"]),
        brand=_values(aggregations["brand"]["buckets"]),
        price=[PriceFacet(key=b["key"], low=by_key[b["key"]].low, high=by_key[b["key"]].high,
                          count=b["doc_count"]) for b in aggregations["price"]["buckets"]],
        attributes={n: _top(attributes[n]) for n in names[:ATTRIBUTE_NAMES]},
    )


def _hit(source: dict[str, Any]) -> Hit:
    return Hit(id=source["id"], name=source["name"], category=source["category"],
               brand=source.get("brand"), price_min=source.get("price_min"),
               price_max=source.get("price_max"), currency=source.get("currency"),
               in_stock=source.get("in_stock", False), image=source.get("image"),
               rating=source.get("rating"), rating_count=source.get("rating_count") or 0)
