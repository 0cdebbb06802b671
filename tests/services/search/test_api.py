"""The HTTP surface: analytics of searches and clicks, personal boosting, and input errors
answered with 4xx (never 500). Engine-independent, so run on the embedded default."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from kommerce.testbed.redis import RedisServer

from .conftest import CATALOG, Service, search_service

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
async def service(request: pytest.FixtureRequest, search_database_url: str,
                  redis_server: RedisServer) -> AsyncIterator[Service]:
    async with search_service(request, "postgres", search_database_url,
                              redis_server.url) as running_service:
        await running_service.apply(*CATALOG)
        yield running_service


async def test_searches_clicks_and_zero_result_queries_are_reported(service: Service) -> None:
    first = await service.search(q="Running  Shoes")
    await service.search(q="running shoes")
    await service.search(q="xylophone")
    await service.search(q="xylophone")
    await service.search(category="shoes")  # browsing without words is not a query
    clicked = first["items"][0]
    for _ in range(2):  # a double click counts once
        response = await service.client.post("/search/clicks", json={
            "query_id": first["query_id"], "product_id": clicked["id"], "position": 1})
        assert response.status_code == 204, response.text

    response = await service.client.get("/search/analytics",
                                        headers=service.token("ops", "admin"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["searches"] == 4
    assert report["zero_result_searches"] == 2 and report["zero_result_rate"] == 0.5
    assert report["searches_with_click"] == 1 and report["click_through_rate"] == 0.25
    assert report["top_queries"][0]["query"] in {"running shoes", "xylophone"}
    by_query = {q["query"]: q for q in report["top_queries"]}
    assert by_query["running shoes"]["searches"] == 2
    assert by_query["running shoes"]["clicked"] == 1
    assert report["zero_result_queries"] == [{"query": "xylophone", "searches": 2}]


async def test_analytics_are_for_admins(service: Service) -> None:
    assert (await service.client.get("/search/analytics")).status_code == 401
    shopper = service.token("shopper-1")
    assert (await service.client.get("/search/analytics", headers=shopper)).status_code == 403


async def test_a_click_on_an_unknown_search_is_404(service: Service) -> None:
    response = await service.client.post("/search/clicks", json={
        "query_id": str(uuid.uuid4()), "product_id": str(uuid.uuid4()), "position": 1})
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_search"


@pytest.mark.parametrize("params", [
    {"page": 200, "size": 100},
    {"attr": "no-colon"},
    {"attr": ":red"},
    {"price_min": -1},
    {"size": 0},
    {"sort": "cheapest"},
    {"q": "x" * 201},
])
async def test_bad_search_parameters_are_client_errors(service: Service,
                                                       params: dict[str, str | int]) -> None:
    response = await service.client.get("/search", params=params)
    assert response.status_code in (400, 422), response.text


async def test_odd_words_are_searched_literally(service: Service) -> None:
    for q in ["'", "\\", "a & b | !c", "(((", "<->", "laptop:*", "ünïcödé", "%_"]:
        response = await service.client.get("/search", params={"q": q})
        assert response.status_code == 200, (q, response.text)
        response = await service.client.get("/search/autocomplete", params={"q": q})
        assert response.status_code == 200, (q, response.text)
