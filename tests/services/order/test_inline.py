"""Saga commands run inline as soon as they commit, and again arrive over the bus: each
step is still done once, and with inline runs switched off the bus alone carries a saga.

This is the order service's own machinery (how often its state machine's commands reach a
participant), so the participants are the scripted ones that count calls: a real,
idempotent participant would hide a second call."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from services.core.events.consumer import idempotent
from services.core.events.envelope import EventEnvelope
from services.core.events.tables import outbox, processed_events
from services.order.events import own_handlers
from tests.services.order.conftest import (
    ScriptedParticipants,
    Service,
    order_settings,
    scripted_order_service,
)
from tests.services.order.test_checkout import checkout_body, place, settled
from tests.services.support import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

STEPS = ("reserve_inventory", "charge_payment", "create_shipment", "commit_inventory")


async def duplicates(service: Service) -> float:
    """Events the service's own consumer found already handled (process-wide counter)."""
    text = (await service.client.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("events_consumed_total{")
               and 'outcome="duplicate"' in line and 'topic="order.events"' in line)


async def test_each_step_runs_once_though_it_runs_inline_and_arrives_over_the_bus(
        order_database_url: str, redis_server: object) -> None:
    settings = order_settings(order_database_url, redis_server.url)  # type: ignore[attr-defined]
    async with scripted_order_service(settings, ScriptedParticipants()) as service:
        before = await duplicates(service)
        headers = service.auth()
        order = (await place(service, headers, checkout_body())).json()
        await settled(service, headers, order["id"], "CONFIRMED")
        assert {action: service.world.calls[(order["id"], action)] for action in STEPS} == \
            dict.fromkeys(STEPS, 1)

        async def every_command_published_and_seen_again() -> bool:
            async with service.database.session() as session:
                published = await session.scalar(
                    select(func.count()).select_from(outbox)
                    .where(outbox.c.event_type == "order.saga_command",
                           outbox.c.event_key == order["id"],
                           outbox.c.published_at.is_not(None)))
            return (published == len(STEPS)
                    and await duplicates(service) - before >= len(STEPS))

        # The bus delivers the same four commands later; the consumer knows this process
        # ran them and acknowledges them without a transaction (no processed mark).
        await eventually(every_command_published_and_seen_again,
                         what="the bus to deliver the commands run inline")
        async with service.database.session() as session:
            assert await session.scalar(
                select(func.count()).select_from(processed_events)
                .where(processed_events.c.event_type == "order.saga_command")) == 0
        assert sum(service.world.calls.values()) == len(STEPS)


async def test_a_command_copy_arriving_after_its_step_does_nothing(
        order_database_url: str, redis_server: object) -> None:
    """What a copy finds when this process has no memory of running it (delivered after a
    restart, or to another replica): the saga row says the step is done, so the database
    path acknowledges it and calls no participant."""
    settings = order_settings(order_database_url, redis_server.url)  # type: ignore[attr-defined]
    async with scripted_order_service(settings, ScriptedParticipants()) as service:
        headers = service.auth()
        order = (await place(service, headers, checkout_body())).json()
        await settled(service, headers, order["id"], "CONFIRMED")
        async with service.database.session() as session:
            envelopes = (await session.scalars(
                select(outbox.c.envelope).where(outbox.c.event_type == "order.saga_command",
                                                outbox.c.event_key == order["id"]))).all()
        assert len(envelopes) == len(STEPS)
        copy = idempotent(service.database, "order-replica", own_handlers(
            lambda: service.app.state.orchestrator).dispatch)
        for envelope in envelopes:
            await copy(EventEnvelope.model_validate(envelope))
        assert sum(service.world.calls.values()) == len(STEPS)
        async with service.database.session() as session:
            assert await session.scalar(
                select(func.count()).select_from(processed_events)
                .where(processed_events.c.consumer_group == "order-replica")) == len(STEPS)


async def test_with_inline_runs_off_the_bus_alone_carries_the_saga(
        order_database_url: str, redis_server: object) -> None:
    settings = order_settings(order_database_url, redis_server.url,  # type: ignore[attr-defined]
                              saga_inline_concurrency=0)
    async with scripted_order_service(settings, ScriptedParticipants()) as service:
        headers = service.auth()
        order = (await place(service, headers, checkout_body())).json()
        await settled(service, headers, order["id"], "CONFIRMED")
        assert {action: service.world.calls[(order["id"], action)] for action in STEPS} == \
            dict.fromkeys(STEPS, 1)
