"""The one interface both engines implement, and the query/result shapes they share.

The behavioural tests run against this interface with each engine, so the shapes here are
the contract: what a filter means (values of one facet are OR-ed, different facets AND-ed),
which price ranges exist, how results are ordered when scores tie (by id, so pages never
overlap) and that facets count the filtered result set.

Both engines bound the work of one search, so a query word found in half of a large
catalog stays fast: facets count at most :data:`FACET_CANDIDATES` matches, the best ones
(``facets_exact`` says whether that was all of them), and ``total`` is exact up to that many
(beyond, it is that many with ``total_relation`` "gte", as Elasticsearch reports a bounded
``track_total_hits``; the page window grows with the page asked for).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from services.search.documents import ProductDocument


@dataclass(frozen=True)
class PriceRange:
    """A price facet bucket: ``low`` ≤ price < ``high`` (minor units; None = open)."""

    key: str
    low: int | None
    high: int | None


#: Fixed buckets, so counts are comparable between queries and engines.
PRICE_RANGES: tuple[PriceRange, ...] = (
    PriceRange("under-25", None, 2500),
    PriceRange("25-50", 2500, 5000),
    PriceRange("50-100", 5000, 10000),
    PriceRange("100-250", 10000, 25000),
    PriceRange("250-and-up", 25000, None),
)


#: How many of the best matches facets and totals are counted over (all when fewer match).
FACET_CANDIDATES = 1_000


class SortOrder(StrEnum):
    RELEVANCE = "relevance"
    PRICE_ASC = "price_asc"
    PRICE_DESC = "price_desc"
    NEWEST = "newest"
    #: Best rated first (unrated last); among equal ratings, the more reviewed first.
    RATING = "rating"


@dataclass(frozen=True)
class SearchQuery:
    text: str = ""
    categories: Sequence[str] = ()
    brands: Sequence[str] = ()
    attributes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    price_min: int | None = None
    price_max: int | None = None
    in_stock: bool | None = None
    sort: SortOrder = SortOrder.RELEVANCE
    offset: int = 0
    limit: int = 20
    #: Categories to rank higher when scores are otherwise close (the shopper's recent ones).
    boost_categories: Sequence[str] = ()


class Hit(BaseModel):
    id: uuid.UUID
    name: str
    category: str
    brand: str | None
    price_min: int | None = Field(description="Cheapest variant, minor units.")
    price_max: int | None
    currency: str | None
    in_stock: bool
    image: str | None = None
    rating: float | None = Field(None, description="Average approved review rating, 1-5; "
                                 "null when not rated.")
    rating_count: int = Field(0, description="Approved reviews the rating averages.")


class FacetValue(BaseModel):
    value: str
    count: int


class PriceFacet(BaseModel):
    key: str
    low: int | None = Field(description="Inclusive lower bound, minor units (null: none).")
    high: int | None = Field(description="Exclusive upper bound, minor units (null: none).")
    count: int


class Facets(BaseModel):
    category: list[FacetValue] = Field(default_factory=list)
    brand: list[FacetValue] = Field(default_factory=list)
    price: list[PriceFacet] = Field(default_factory=list)
    attributes: dict[str, list[FacetValue]] = Field(default_factory=dict)


class SearchResults(BaseModel):
    total: int
    total_relation: Literal["eq", "gte"] = Field(
        "eq", description="'gte': more than ``total`` match (counting stops there).")
    hits: list[Hit]
    facets: Facets
    facets_exact: bool = Field(
        True, description="False when facets count only the best matches of a very large "
        "result set.")


class Suggestion(BaseModel):
    id: uuid.UUID
    name: str
    category: str


class SearchBackend(Protocol):
    """A search engine over product documents."""

    name: str

    async def start(self) -> None:
        """Make sure the index exists (creating it on first start)."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise when the engine cannot answer (for ``/ready``)."""

    async def refresh(self) -> None:
        """Make what was indexed visible to searches."""

    async def needs_rebuild(self) -> bool:
        """True when the engine holds nothing, or an index built for another mapping, and
        should be rebuilt from the store (checked at start-up)."""

    async def index(self, documents: Sequence[ProductDocument]) -> None:
        """Add or replace documents; an older version never replaces a newer one."""

    async def remove(self, product_id: uuid.UUID, version: int) -> None: ...

    async def search(self, query: SearchQuery) -> SearchResults: ...

    async def autocomplete(self, prefix: str, limit: int) -> list[Suggestion]: ...

    async def rebuild(self, documents: AsyncIterator[Sequence[ProductDocument]]) -> int:
        """Build a complete new index from ``documents`` and switch to it without a moment
        when queries fail or see a half-built index; how many documents it holds."""


def hit_of(document: ProductDocument) -> Hit:
    return Hit(id=document.id, name=document.name, category=document.category,
               brand=document.brand, price_min=document.price_min,
               price_max=document.price_max, currency=document.currency,
               in_stock=document.in_stock, image=document.images[0] if document.images else None,
               rating=document.rating, rating_count=document.rating_count)


def price_facets(counts: dict[str, int]) -> list[PriceFacet]:
    return [PriceFacet(key=r.key, low=r.low, high=r.high, count=counts.get(r.key, 0))
            for r in PRICE_RANGES]


_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 8
MAX_TERM_LENGTH = 40


def terms_of(text: str) -> list[str]:
    """Lower-cased words, as the standard analyzer splits them (bounded, so a pasted essay
    cannot make a query of thousands of clauses)."""
    return [w[:MAX_TERM_LENGTH] for w in _WORD.findall(text.lower())][:MAX_TERMS]
