"""Fixtures for the order service's tests, two kinds of world around it:

* :class:`RealParticipants` — the real product, payment and shipping services, each served
  over loopback HTTP by uvicorn on the session's PostgreSQL and Redis, payment on its Stripe
  backend against stripe-mock through a :class:`StripeRecorder`. The order service runs
  in-process against them with its own wiring (its HTTP participants and pricing, its own
  service identity), on the same bus namespace, so payment's and shipping's events reach
  it. One set per test module. Every test that claims something about the other services —
  stock held, released or sold, a charge made once, a refund, a shipment — runs here and
  counts at the source (their tables, stripe-mock's requests).
* :class:`ScriptedParticipants` — in-memory stand-ins, for tests of the order service's own
  saga machinery only: which commands its state machine sends and how often (inline and
  over the bus), and the shape of its API. It claims nothing about the other services; it
  counts calls, which real (idempotent) participants would hide.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kommerce.testbed.checkout_platform import WEBHOOK_SECRET, StripeRecorder, signed_webhook
from services.core.auth import TokenService
from services.core.db import Database
from services.order.app import create_app
from services.order.participants import shipment_id
from services.order.repository import SagaOrder
from services.order.saga import (
    Command,
    Compensation,
    CompensationDone,
    PaymentActionRequired,
    SagaEvent,
    Step,
    StepFailed,
    StepSucceeded,
    reservation_id,
)
from services.order.settings import OrderSettings
from services.payment.app import create_app as create_payment_app
from services.payment.providers import ChargeStatus
from services.payment.providers.sandbox import SandboxGateway
from services.product.app import create_app as create_product_app
from services.shipping.app import create_app as create_shipping_app
from services.shipping.settings import ShippingSettings
from tests.services.fuzz import served
from tests.services.payment.conftest import payment_settings
from tests.services.product.conftest import product_settings
from tests.services.support import running, unique

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer
    from kommerce.testbed.stripe_mock import StripeMock

PRICE = 1250
ADDRESS = {"name": "Ann Shopper", "line1": "1 Main St", "city": "Springfield",
           "postal_code": "12345", "country": "US"}


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
    """The order service under test, in-process."""

    app: FastAPI
    client: httpx.AsyncClient

    @property
    def database(self) -> Database:
        return self.app.state.runtime.require_database()  # type: ignore[no-any-return]

    def auth(self, user: str | None = None, *roles: str) -> dict[str, str]:
        settings = self.app.state.settings
        token = TokenService(settings).issue_access(user or unique("shopper"), roles)
        return {"Authorization": f"Bearer {token.token}"}


# -- the real participants -------------------------------------------------------------------


@dataclass
class RealParticipants:
    """The product, payment and shipping services, served; what they hold is read from
    their own tables, what was asked of Stripe from the recorder."""

    urls: dict[str, str]
    schemas: dict[str, str]
    database_url: str
    redis_url: str
    topic_prefix: str
    recorder: StripeRecorder
    engine: AsyncEngine
    tokens: TokenService

    def order_settings(self, **overrides: Any) -> OrderSettings:
        """An order service wired to these services, on their bus namespace."""
        return order_settings(self.database_url, self.redis_url, **{
            "event_topic_prefix": self.topic_prefix,
            "product_service_url": self.urls["product"],
            "payment_service_url": self.urls["payment"],
            "shipping_service_url": self.urls["shipping"], **overrides})

    def admin(self) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.tokens.issue_access(
            "catalog-admin", ["admin"]).token}

    async def variants(self, count: int = 1, *, stock: int = 1_000, price: int = PRICE,
                       currency: str = "USD") -> list[str]:
        """A new product with ``count`` variants priced in ``currency``, ``stock`` units
        each."""
        async with httpx.AsyncClient(base_url=self.urls["product"], timeout=30,
                                     headers=self.admin()) as product:
            slug = unique("things").replace("_", "-")
            created = await product.post("/categories", json={"slug": slug, "name": "Things"})
            assert created.status_code == 201, created.text
            made = await product.post("/products", json={
                "category": slug, "name": "Widget", "variants": [
                    {"sku": unique("SKU"), "stock": stock,
                     "price": {"amount": price, "currency": currency}}
                    for _ in range(count)]})
            assert made.status_code == 201, made.text
        return [v["id"] for v in made.json()["variants"]]

    async def set_price(self, variant_id: str, amount: int) -> None:
        async with httpx.AsyncClient(base_url=self.urls["product"], timeout=30,
                                     headers=self.admin()) as product:
            found = (await product.get(f"/variants/{variant_id}")).json()
            moved = await product.put(
                f"/products/{found['product_id']}/variants/{variant_id}/price",
                json={"amount": amount, "currency": "USD"})
            assert moved.status_code == 200, moved.text

    async def product_of(self, variant_id: str) -> str:
        async with httpx.AsyncClient(base_url=self.urls["product"], timeout=30) as product:
            response = await product.get(f"/variants/{variant_id}")
        assert response.status_code == 200, response.text
        return str(response.json()["product_id"])

    async def stock(self, variant_id: str) -> dict[str, int]:
        """``on_hand``, ``reserved`` and ``available``, as the catalog shows them."""
        async with httpx.AsyncClient(base_url=self.urls["product"], timeout=30) as product:
            response = await product.get(f"/variants/{variant_id}")
        assert response.status_code == 200, response.text
        return dict(response.json()["stock"])

    async def rows(self, sql: str, **params: object) -> list[tuple[Any, ...]]:
        async with self.engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(sql), params)).all()]

    async def reservation(self, order_id: str) -> str | None:
        """The status of the order's reservation in the product service's table."""
        found = await self.rows(f'SELECT status FROM "{self.schemas["product"]}".reservations '
                                "WHERE id = :id", id=reservation_id(order_id))
        return found[0][0] if found else None

    async def payments(self, order_id: str) -> list[tuple[str, int, int, str | None]]:
        """(status, amount, refunded amount, intent id) of each payment for the order."""
        return await self.rows(  # type: ignore[return-value]
            f'SELECT status, amount, refunded_amount, intent_id FROM '
            f'"{self.schemas["payment"]}".payments WHERE order_id = :id ORDER BY created_at',
            id=order_id)

    async def shipments(self, order_id: str) -> list[tuple[str, str]]:
        """(id, status) of each shipment for the order."""
        return await self.rows(  # type: ignore[return-value]
            f'SELECT id::text, status FROM "{self.schemas["shipping"]}".shipments '
            "WHERE order_id = :id", id=order_id)

    def charge_keys(self, order_id: str) -> set[str]:
        """Distinct Idempotency-Keys of the PaymentIntents Stripe was asked for the order:
        one per charge, however often the request was repeated."""
        return {c.idempotency_key or "" for c in self.recorder.intents_for(order_id)}

    async def webhook(self, event_type: str, obj: dict[str, Any]) -> httpx.Response:
        """Stripe telling the payment service about ``obj``, signed as Stripe signs."""
        body, headers = signed_webhook(event_type, obj)
        async with httpx.AsyncClient(base_url=self.urls["payment"], timeout=30) as payment:
            return await payment.post("/webhooks/stripe", content=body, headers=headers)

    async def deliver(self, order_id: str, description: str) -> None:
        """The carrier's delivered scan, recorded at the shipping service."""
        token = self.tokens.issue_access("carrier-feed", ["admin"]).token
        async with httpx.AsyncClient(base_url=self.urls["shipping"], timeout=30) as shipping:
            response = await shipping.post(
                f"/shipments/{shipment_id(order_id)}/tracking",
                headers={"Authorization": f"Bearer {token}"},
                json={"status": "delivered", "occurred_at": datetime.now(UTC).isoformat(),
                      "description": description})
        assert response.status_code == 200, response.text


@contextmanager
def serving_participants(database_url: str, redis_url: str,
                         stripe_api_base: str) -> Iterator[tuple[dict[str, str],
                                                                 dict[str, str], str]]:
    """Serve product, payment (Stripe backend) and shipping on one bus namespace; yield
    their URLs, schemas and the namespace."""
    topics = unique("t") + "."
    common = {"event_topic_prefix": topics, "outbox_poll_interval_seconds": 0.05}
    product = product_settings(database_url, redis_url, **common)
    payment = payment_settings(database_url, redis_url, **common, payment_backend="stripe",
                               stripe_api_key="sk_test_123", stripe_api_base=stripe_api_base,
                               stripe_webhook_secret=WEBHOOK_SECRET)
    shipping = ShippingSettings(environment="test", log_json=False, database_url=database_url,
                                redis_url=redis_url, database_schema=unique("shipping"),
                                cache_prefix=unique("s") + ":", **common)
    apps = {"product": create_product_app(product), "payment": create_payment_app(payment),
            "shipping": create_shipping_app(shipping)}
    with ExitStack() as stack:
        urls = {name: stack.enter_context(served(app, name)) for name, app in apps.items()}
        schemas = {"product": product.database_schema, "payment": payment.database_schema,
                   "shipping": shipping.database_schema}
        yield urls, schemas, topics


@pytest.fixture(scope="module")
async def real(postgres_server: PostgresServer, redis_server: RedisServer,
               stripe_mock: StripeMock) -> AsyncIterator[RealParticipants]:
    database_url = postgres_server.create_database("order_participants")
    recorder = StripeRecorder(stripe_mock.api_base)
    engine = create_async_engine(database_url)
    with recorder.serving(), serving_participants(database_url, redis_server.url,
                                                  recorder.url) as (urls, schemas, topics):
        tokens = TokenService(product_settings(database_url, redis_server.url))
        try:
            yield RealParticipants(urls, schemas, database_url, redis_server.url, topics,
                                   recorder, engine, tokens)
        finally:
            await engine.dispose()


@asynccontextmanager
async def order_service_on(real: RealParticipants, **overrides: Any) -> AsyncIterator[Service]:
    """The order service as it ships (its own participants and pricing over HTTP)."""
    app = create_app(real.order_settings(**overrides))
    async with running(app) as client:
        yield Service(app, client)


@pytest.fixture(scope="module")
async def service(real: RealParticipants) -> AsyncIterator[Service]:
    """One order service per module on the module's real participants."""
    async with order_service_on(real) as started:
        yield started


# -- the scripted participants (the state machine's own tests) -------------------------------


@dataclass
class ScriptedParticipants:
    """Product, payment and shipping as in-memory scripts that count every call, idempotent
    per command key: for what the order service's state machine sends, not for what the
    other services do (that is :class:`RealParticipants`)."""

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


@dataclass
class ScriptedService(Service):
    world: ScriptedParticipants = field(default_factory=ScriptedParticipants)


@asynccontextmanager
async def scripted_order_service(settings: OrderSettings,
                                 world: ScriptedParticipants) -> AsyncIterator[ScriptedService]:
    app = create_app(settings, participants=world, pricing=world)
    async with running(app) as client:
        yield ScriptedService(app, client, world)
