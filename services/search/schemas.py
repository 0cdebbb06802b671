"""Request and response shapes of the search API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.search.backend import Facets, Hit, Suggestion

#: Elasticsearch's max_result_window: deeper pages need a cursor, which browsing never does.
MAX_RESULT_WINDOW = 10_000


class SearchPage(BaseModel):
    query_id: uuid.UUID = Field(description="Send with a click (POST /search/clicks) so "
                                "click-through can be measured.")
    total: int
    total_relation: Literal["eq", "gte"] = Field(
        "eq", description="'gte': at least ``total`` results match (counting stops there).")
    page: int
    size: int
    items: list[Hit]
    facets: Facets
    facets_exact: bool = Field(True, description="False when facets count only the best "
                               "matches of a very large result set.")


class Suggestions(BaseModel):
    suggestions: list[Suggestion]


class ClickIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query_id: uuid.UUID
    product_id: uuid.UUID
    position: int = Field(ge=1, le=MAX_RESULT_WINDOW,
                          description="1-based rank of the result in the search.")


class QueryStats(BaseModel):
    query: str
    searches: int
    clicked: int
    average_results: float


class ZeroResultQuery(BaseModel):
    query: str
    searches: int


class AnalyticsReport(BaseModel):
    since: datetime
    searches: int = Field(description="Searches with text in the window.")
    zero_result_searches: int
    zero_result_rate: float
    searches_with_click: int
    click_through_rate: float
    top_queries: list[QueryStats]
    zero_result_queries: list[ZeroResultQuery]


class RebuildOut(BaseModel):
    documents: int = Field(description="Live documents in the new index.")
    engine: str
