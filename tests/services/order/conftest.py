"""Fixtures for the order service's tests: a running service on the session's PostgreSQL and
Redis (the event bus), with in-process participants — stock that can run out, the payment
sandbox answering as Stripe's test cards do, and shipping that can be told to fail — which
count every effect so tests can assert "once"."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from services.core.auth import TokenService
from services.core.db import Database
from services.order.app import create_app
from services.order.saga import (
    Command,
    Compensation,
    CompensationDone,
    PaymentActionRequired,
    SagaEvent,
    Step,
    StepFailed,
    StepSucceeded,
)
from services.order.saga_rows import SagaOrder
from services.order.settings import OrderSettings
from services.payment.gateway import ChargeStatus, SandboxGateway
from tests.services.support import running, unique

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer

PRICE = 1250


@dataclass
class World:
    """The other services, in memory, idempotent per command key like the real ones."""

    stock: int = 1_000
    fail_shipments: bool = False
    payments: SandboxGateway = field(default_factory=SandboxGateway)
    reservations: dict[str, str] = field(default_factory=dict)  # order -> status
    charges: dict[str, str] = field(default_factory=dict)  # order -> intent id
    refunds: Counter[str] = field(default_factory=Counter)
    shipments: dict[str, str] = field(default_factory=dict)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    charge_keys: set[str] = field(default_factory=set)

    async def prices(self, variant_ids: list[uuid.UUID], currency: str) -> dict[uuid.UUID, int]:
        return {v: PRICE for v in variant_ids} if currency == "usd" else {}

    async def perform(self, order: SagaOrder, command: Command) -> SagaEvent:
        key = str(order.id)
        self.calls[(key, command.action.value)] += 1
        match command.action:
            case Step.RESERVE_INVENTORY:
                quantity = sum(int(line["quantity"]) for line in order.lines)
                if key not in self.reservations:
                    if quantity > self.stock:
                        return StepFailed(Step.RESERVE_INVENTORY, "out of stock")
                    self.stock -= quantity
                    self.reservations[key] = "active"
                return StepSucceeded(Step.RESERVE_INVENTORY, key)
            case Step.CHARGE_PAYMENT:
                self.charge_keys.add(command.idempotency_key)
                result = await self.payments.charge(
                    amount=order.total, currency=order.currency,
                    payment_method=order.payment_method,
                    idempotency_key=command.idempotency_key)
                if result.status is ChargeStatus.DECLINED:
                    return StepFailed(Step.CHARGE_PAYMENT,
                                      f"payment declined: {result.failure_message}")
                if result.status is ChargeStatus.REQUIRES_ACTION:
                    return PaymentActionRequired(result.intent_id)
                assert result.intent_id
                self.charges[key] = result.intent_id
                return StepSucceeded(Step.CHARGE_PAYMENT, result.intent_id)
            case Step.CREATE_SHIPMENT:
                if self.fail_shipments:
                    return StepFailed(Step.CREATE_SHIPMENT, "no carrier serves the address")
                self.shipments.setdefault(key, "created")
                return StepSucceeded(Step.CREATE_SHIPMENT, f"shp-{key}")
            case Step.COMMIT_INVENTORY:
                self.reservations[key] = "committed"
                return StepSucceeded(Step.COMMIT_INVENTORY)
            case Compensation.CANCEL_SHIPMENT:
                if key in self.shipments:
                    self.shipments[key] = "cancelled"
                return CompensationDone(Compensation.CANCEL_SHIPMENT)
            case Compensation.REFUND_PAYMENT:
                if key in self.charges:
                    await self.payments.refund(intent_id=self.charges[key], amount=None,
                                               idempotency_key=command.idempotency_key)
                    self.refunds[key] += 1
                return CompensationDone(Compensation.REFUND_PAYMENT)
            case Compensation.RELEASE_INVENTORY:
                if self.reservations.get(key) == "active":
                    self.reservations[key] = "released"
                    self.stock += sum(int(line["quantity"]) for line in order.lines)
                return CompensationDone(Compensation.RELEASE_INVENTORY)
        raise AssertionError(command)


@pytest.fixture(scope="session")
def order_database_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database("order_tests")


def order_settings(database_url: str, redis_url: str, **overrides: Any) -> OrderSettings:
    values: dict[str, Any] = {
        "environment": "test", "log_json": False, "database_url": database_url,
        "database_schema": unique("order"), "redis_url": redis_url,
        "cache_prefix": unique("o") + ":", "event_topic_prefix": unique("t") + ".",
        "outbox_poll_interval_seconds": 0.05, "saga_timer_interval_seconds": 0.2,
        "saga_step_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return OrderSettings(**values)


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient
    world: World

    @property
    def database(self) -> Database:
        return self.app.state.runtime.require_database()  # type: ignore[no-any-return]

    def auth(self, user: str | None = None, *roles: str) -> dict[str, str]:
        settings = self.app.state.settings
        token = TokenService(settings).issue_access(user or unique("shopper"), roles)
        return {"Authorization": f"Bearer {token.token}"}


@asynccontextmanager
async def order_service(settings: OrderSettings, world: World) -> AsyncIterator[Service]:
    app = create_app(settings, participants=world, pricing=world)
    async with running(app) as client:
        yield Service(app, client, world)


@pytest.fixture
async def service(order_database_url: str,
                  redis_server: RedisServer) -> AsyncIterator[Service]:
    async with order_service(order_settings(order_database_url, redis_server.url),
                             World()) as started:
        yield started
