"""The search service's routes: parse, call the service, shape the response.

Searching and autocomplete are public (a signed-in shopper's recent categories rank higher);
clicks are public too (they carry the search id); analytics and rebuilds need ``admin``.
Search words are :data:`~services.core.pci.FreeText`: a card number typed into the search
box is masked before it is searched for or recorded in the analytics (refusing the search
would help nobody; storing it would put a card number in the analytics table).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from services.core.auth import AdminUser, OptionalUser
from services.core.errors import InvalidRequest
from services.core.pci import FreeText
from services.core.state import AppState
from services.search.backend import SearchQuery, SortOrder
from services.search.schemas import (
    MAX_RESULT_WINDOW,
    AnalyticsReport,
    ClickIn,
    RebuildOut,
    SearchPage,
    Suggestions,
)
from services.search.service import SearchIndexer, SearchService

router = APIRouter(tags=["search"])

ATTRIBUTE_FILTER = r"^[^:]{1,63}:.{1,200}$"
SEARCH_WORDS = ("Words to look for; empty browses the filtered catalog. A card number in "
                "them is masked.")


#: Built by the app's lifespan (see :mod:`.app`).
SEARCH = AppState[SearchService]("search")
INDEXER = AppState[SearchIndexer]("indexer")


def _service(request: Request) -> SearchService:
    return SEARCH.of(request)


def _indexer(request: Request) -> SearchIndexer:
    return INDEXER.of(request)


@router.get("/search", response_model=SearchPage)
async def search(
    request: Request,
    user: OptionalUser,
    q: Annotated[FreeText, Query(max_length=200, description=SEARCH_WORDS)] = "",
    category: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006
    brand: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006
    attr: Annotated[list[str], Query(max_length=20, description="name:value, repeatable "
                                     "(values of one name are OR-ed).")] = [],  # noqa: B006
    price_min: Annotated[int | None, Query(ge=0, le=10**12)] = None,
    price_max: Annotated[int | None, Query(ge=0, le=10**12)] = None,
    in_stock: bool | None = None,
    sort: SortOrder = SortOrder.RELEVANCE,
    page: Annotated[int, Query(ge=1, le=MAX_RESULT_WINDOW)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SearchPage:
    if page * size > MAX_RESULT_WINDOW:
        raise InvalidRequest(f"results beyond the first {MAX_RESULT_WINDOW} are not served; "
                             "narrow the search", code="page_too_deep")
    attributes: dict[str, list[str]] = {}
    for item in attr:
        name, sep, value = item.partition(":")
        if not sep or not name or not value or len(name) > 63 or len(value) > 200:
            raise InvalidRequest(f"attribute filter {item[:80]!r} is not name:value",
                                 code="bad_attribute_filter")
        attributes.setdefault(name, []).append(value)
    for values in (category, brand):
        if any(not v or len(v) > 200 for v in values):
            raise InvalidRequest("filter values must be 1-200 characters")
    query = SearchQuery(text=q, categories=category, brands=brand, attributes=attributes,
                        price_min=price_min, price_max=price_max, in_stock=in_stock, sort=sort,
                        offset=(page - 1) * size, limit=size)
    query_id, results = await _service(request).search(
        query, user.user_id if user is not None else None)
    return SearchPage(query_id=query_id, total=results.total,
                      total_relation=results.total_relation, page=page, size=size,
                      items=results.hits, facets=results.facets,
                      facets_exact=results.facets_exact)


@router.get("/search/autocomplete", response_model=Suggestions)
async def autocomplete(
    request: Request,
    q: Annotated[FreeText, Query(min_length=1, max_length=100)],
    limit: Annotated[int, Query(ge=1, le=20)] = 8,
) -> Suggestions:
    return Suggestions(suggestions=await _service(request).autocomplete(q, limit))


@router.post("/search/clicks", status_code=status.HTTP_204_NO_CONTENT,
             response_class=Response)
async def record_click(request: Request, click: ClickIn) -> Response:
    await _service(request).record_click(click.query_id, click.product_id, click.position)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/search/analytics", response_model=AnalyticsReport)
async def analytics(
    request: Request,
    _admin: AdminUser,
    days: Annotated[int, Query(ge=1, le=3650)] = 30,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> AnalyticsReport:
    return AnalyticsReport.model_validate(await _service(request).analytics(days, limit))


@router.post("/search/rebuild", response_model=RebuildOut)
async def rebuild(request: Request, _admin: AdminUser) -> RebuildOut:
    """A full rebuild from the service's document store, switched in without downtime."""
    indexer = _indexer(request)
    return RebuildOut(documents=await indexer.rebuild(), engine=indexer.backend.name)
