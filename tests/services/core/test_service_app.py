"""A whole service built by create_service_app on real PostgreSQL and Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from kommerce.testbed.redis import RedisServer
from services.core.app import CacheDep, Consume, Runtime, create_service_app
from services.core.errors import NotFound
from services.core.events.envelope import EventEnvelope
from services.core.events.outbox import add_event
from tests.services.support import eventually, running, unique

from .conftest import make_settings
from .sample_service.models import MIGRATIONS, Widget
from .test_outbox_and_consumers import counting_handlers

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


class WidgetIn(BaseModel):
    name: str


class WidgetOut(BaseModel):
    name: str
    count: int


def widget_router() -> APIRouter:
    """What a service's api.py + service.py look like on the core."""
    router = APIRouter(prefix="/widgets")

    @router.post("", status_code=201)
    async def create_widget(body: WidgetIn, runtime: Runtime) -> WidgetOut:
        async with runtime.require_database().session() as session, session.begin():
            session.add(Widget(name=body.name, count=0))
            await add_event(session, EventEnvelope.new(
                "widget.created", source="widgets", key=body.name,
                payload={"name": body.name}))
        return WidgetOut(name=body.name, count=0)

    @router.get("/{name}")
    async def read_widget(name: str, runtime: Runtime, cache: CacheDep) -> WidgetOut:
        async def load() -> dict[str, object] | None:
            async with runtime.require_database().session() as session:
                widget = await session.scalar(select(Widget).where(Widget.name == name))
            return None if widget is None else {"name": widget.name, "count": widget.count}

        found = await cache.get_or_load(f"widget:{name}", load)
        if found is None:
            raise NotFound(f"no widget {name!r}")
        return WidgetOut.model_validate(found)

    @router.get("/-/runtime")
    async def runtime_info(runtime: Runtime) -> dict[str, str]:
        return {"service": runtime.settings.service_name}

    return router


def widget_app(database_url: str, redis_url: str, **overrides: object):  # type: ignore[no-untyped-def]
    settings = make_settings(
        database_url=database_url, database_schema=unique("svc"), redis_url=redis_url,
        event_topic_prefix=unique("t") + ".", cache_prefix=unique("c") + ":",
        outbox_poll_interval_seconds=0.1, **overrides)
    return create_service_app(settings, routers=[widget_router()], migrations=MIGRATIONS,
                              consumers=[Consume("widgets.events", counting_handlers(),
                                                 group="counter")])


async def test_a_write_migrates_publishes_and_is_consumed_inside_one_service(
    core_database_url: str, redis_server: RedisServer,
) -> None:
    app = widget_app(core_database_url, redis_server.url)
    async with running(app) as client:
        created = await client.post("/widgets", json={"name": "sprocket"})
        assert created.status_code == 201

        async def counted() -> bool:
            response = await client.get("/widgets/sprocket")
            await app.state.runtime.cache.invalidate("widget:sprocket")
            return bool(response.json()["count"] == 1)

        await eventually(counted, what="the event to be consumed")
        duplicate = await client.post("/widgets", json={"name": "sprocket"})
        missing = await client.get("/widgets/nothing")

    assert duplicate.status_code == 409
    assert missing.status_code == 404


async def test_ready_names_redis_when_it_is_stopped(
    core_database_url: str, tmp_path: Path,
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        async with running(widget_app(core_database_url, redis.url)) as client:
            ready = await client.get("/ready")
            assert ready.status_code == 200
            assert set(ready.json()["checks"]) == {"database", "redis", "bus"}

            redis.stop()
            not_ready = await client.get("/ready")
            health = await client.get("/health")
    finally:
        redis.stop()

    assert not_ready.status_code == 503
    body = not_ready.json()
    assert set(body["failed"]) == {"redis", "bus"}
    assert body["checks"]["database"]["status"] == "ok"
    assert "error" in body["checks"]["redis"]
    assert health.status_code == 200  # alive: a dependency outage must not restart the pod


async def test_cors_allows_the_configured_origins_only(
    core_database_url: str, redis_server: RedisServer,
) -> None:
    app = widget_app(core_database_url, redis_server.url,
                     cors_origins=["https://shop.example"])
    async with running(app) as client:
        allowed = await client.options("/widgets", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})
        refused = await client.options("/widgets", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})

    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert "access-control-allow-origin" not in refused.headers


async def test_text_postgres_cannot_store_is_a_422_not_a_500(
    core_database_url: str, redis_server: RedisServer,
) -> None:
    async with running(widget_app(core_database_url, redis_server.url)) as client:
        response = await client.post("/widgets", json={"name": "nul\u0000byte"})

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_data"
