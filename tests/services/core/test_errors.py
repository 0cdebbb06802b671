"""One error model; nothing a client sends produces a 500."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.core.app import create_service_app
from services.core.errors import Conflict, InvalidRequest, NotFound, TooManyRequests
from tests.services.support import running

from .conftest import make_settings


class NewWidget(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    count: int = Field(ge=0)


def _app():  # type: ignore[no-untyped-def]
    router = APIRouter()

    @router.post("/widgets")
    async def create(widget: NewWidget) -> NewWidget:
        return widget

    @router.get("/widgets/{widget_id}")
    async def read(widget_id: int) -> dict[str, int]:
        if widget_id == 404:
            raise NotFound("widget 404 does not exist", details={"widget_id": widget_id})
        if widget_id == 409:
            raise Conflict("widget 409 is locked")
        if widget_id == 400:
            raise InvalidRequest("widget 400 is odd", code="odd_widget")
        if widget_id == 429:
            raise TooManyRequests("slow down", retry_after_seconds=7)
        if widget_id == 500:
            raise RuntimeError("a bug")
        return {"id": widget_id}

    return create_service_app(make_settings(), routers=[router], uses_database=False,
                              uses_redis=False, uses_bus=False)


async def test_validation_errors_are_422_with_field_details() -> None:
    async with running(_app()) as client:
        response = await client.post("/widgets", json={"name": "", "count": -1})

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert {tuple(d["loc"]) for d in body["details"]} == {("body", "name"), ("body", "count")}


async def test_malformed_json_and_wrong_types_are_422_not_500() -> None:
    async with running(_app()) as client:
        broken = await client.post("/widgets", content=b"{not json",
                                   headers={"content-type": "application/json"})
        wrong_path_type = await client.get("/widgets/abc")
        huge = await client.get("/widgets/" + "9" * 400)

    assert broken.status_code == 422
    assert wrong_path_type.status_code == 422
    assert huge.status_code in (200, 422)


async def test_domain_errors_map_to_their_status_and_code() -> None:
    async with running(_app()) as client:
        missing = await client.get("/widgets/404")
        conflict = await client.get("/widgets/409")
        odd = await client.get("/widgets/400")
        limited = await client.get("/widgets/429")

    assert (missing.status_code, missing.json()) == (
        404, {"code": "not_found", "message": "widget 404 does not exist",
              "details": {"widget_id": 404}})
    assert (conflict.status_code, conflict.json()["code"]) == (409, "conflict")
    assert (odd.status_code, odd.json()["code"]) == (400, "odd_widget")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")


async def test_unknown_routes_and_methods_use_the_error_model() -> None:
    async with running(_app()) as client:
        unknown = await client.get("/nowhere")
        wrong_method = await client.delete("/widgets")

    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "method_not_allowed")


async def test_a_bug_is_a_500_in_the_same_shape_with_the_request_id() -> None:
    async with running(_app()) as client:
        response = await client.get("/widgets/500", headers={"X-Request-Id": "req-123"})

    assert response.status_code == 500
    assert response.json() == {"code": "internal_error",
                               "message": "an unexpected error occurred",
                               "details": {"request_id": "req-123"}}
