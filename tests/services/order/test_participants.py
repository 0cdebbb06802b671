"""The saga's HTTP participants against the real product, payment and shipping services
(in-process, on PostgreSQL and Redis), calling as the order service's own identity: the
forward steps reserve, charge, ship and commit; a declined card is a refusal; the
compensations release, refund and cancel; and repeating any command changes nothing.

Whole checkouts across the real services, the order service wired as it ships, are in
test_checkout.py, test_events.py and test_cart.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from services.core.auth import TokenService
from services.order.participants import HttpParticipants
from services.order.repository import SagaOrder
from services.order.saga import (
    Command,
    Compensation,
    CompensationDone,
    StepFailed,
    StepSucceeded,
    reservation_id,
)
from services.order.saga import Step as S
from services.order.settings import OrderSettings
from services.payment.app import create_app as create_payment_app
from services.payment.providers.sandbox import SandboxGateway
from services.product.app import create_app as create_product_app
from services.shipping.app import create_app as create_shipping_app
from services.shipping.settings import ShippingSettings
from tests.services.payment.conftest import payment_settings
from tests.services.product.conftest import product_settings, variant
from tests.services.support import running, unique

if TYPE_CHECKING:
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ADDRESS = {"name": "Ann Shopper", "line1": "1 Main St", "city": "Springfield",
           "postal_code": "12345", "country": "US"}


@dataclass
class Services:
    participants: HttpParticipants
    product: httpx.AsyncClient
    payment: httpx.AsyncClient
    shipping: httpx.AsyncClient
    tokens: TokenService
    variant_id: str

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.issue_access('root', ['admin']).token}"}


@pytest.fixture(scope="module")
async def services(postgres_server: PostgresServer,
                   redis_server: RedisServer) -> AsyncIterator[Services]:
    url = postgres_server.create_database(unique("participants"))
    common: dict[str, Any] = {"environment": "test", "log_json": False, "database_url": url,
                              "redis_url": redis_server.url,
                              "event_topic_prefix": unique("t") + ".",
                              "outbox_poll_interval_seconds": 0.1}
    async with AsyncExitStack() as stack:
        product = await stack.enter_async_context(running(create_product_app(
            product_settings(url, redis_server.url))))
        payment = await stack.enter_async_context(running(create_payment_app(
            payment_settings(url, redis_server.url), gateway=SandboxGateway())))
        shipping = await stack.enter_async_context(running(create_shipping_app(
            ShippingSettings(**common, database_schema=unique("shipping"),
                             cache_prefix=unique("s") + ":"))))
        order_settings = OrderSettings(**common, database_schema=unique("order"))
        tokens = TokenService(order_settings)
        services = Services(
            HttpParticipants(tokens, "order", product=product, payment=payment,
                             shipping=shipping),
            product, payment, shipping, tokens, "")
        slug = f"things-{uuid.uuid4().hex[:8]}"
        created = await product.post("/categories", headers=services.admin(),
                                     json={"slug": slug, "name": "Things"})
        assert created.status_code == 201, created.text
        made = await product.post("/products", headers=services.admin(), json={
            "category": created.json()["slug"], "name": "Widget",
            "variants": [variant(amount=1250, currency="USD", stock=1_000)]})
        assert made.status_code == 201, made.text
        services.variant_id = made.json()["variants"][0]["id"]
        yield services


def an_order(services: Services, method: str = "pm_card_visa",
             quantity: int = 2) -> SagaOrder:
    return SagaOrder(id=uuid.uuid4(), owner="ann", status="PENDING", reason=None,
                     currency="usd", total=2500, payment_method=method,
                     lines=[{"variant_id": services.variant_id, "quantity": quantity,
                             "unit_price": 1250}], shipping_address=ADDRESS)


async def run(services: Services, order: SagaOrder, action: S | Compensation) -> Any:
    command = Command(str(order.id), action)
    first = await services.participants.perform(order, command)
    again = await services.participants.perform(order, command)
    assert again == first  # a resent command repeats the first call
    return first


async def reservation(services: Services, order_id: uuid.UUID) -> str:
    response = await services.product.get(
        f"/inventory/reservations/{reservation_id(str(order_id))}",
        headers={"Authorization": "Bearer " + services.tokens.issue_access(
            "service:order", ["service"]).token})
    return str(response.json()["status"])


async def test_forward_steps_reserve_charge_ship_and_commit(services: Services) -> None:
    order = an_order(services)
    assert isinstance(await run(services, order, S.RESERVE_INVENTORY), StepSucceeded)
    charged = await run(services, order, S.CHARGE_PAYMENT)
    assert isinstance(charged, StepSucceeded)
    shipped = await run(services, order, S.CREATE_SHIPMENT)
    assert isinstance(shipped, StepSucceeded)
    assert isinstance(await run(services, order, S.COMMIT_INVENTORY), StepSucceeded)
    assert await reservation(services, order.id) == "committed"
    payments = (await services.payment.get("/payments", params={"order_id": str(order.id)},
                                           headers=services.admin())).json()
    assert [p["status"] for p in payments] == ["succeeded"]


async def test_declined_card_is_a_refusal_and_the_stock_is_released(
        services: Services) -> None:
    order = an_order(services, "pm_card_chargeDeclined")
    await run(services, order, S.RESERVE_INVENTORY)
    declined = await run(services, order, S.CHARGE_PAYMENT)
    assert isinstance(declined, StepFailed) and "declined" in declined.reason
    released = await run(services, order, Compensation.RELEASE_INVENTORY)
    assert released == CompensationDone(Compensation.RELEASE_INVENTORY)
    assert await reservation(services, order.id) == "released"


async def test_compensations_undo_a_shipped_paid_order(services: Services) -> None:
    order = an_order(services)
    for step in (S.RESERVE_INVENTORY, S.CHARGE_PAYMENT, S.CREATE_SHIPMENT):
        await run(services, order, step)
    for compensation in (Compensation.CANCEL_SHIPMENT, Compensation.REFUND_PAYMENT,
                         Compensation.RELEASE_INVENTORY):
        assert await run(services, order, compensation) == CompensationDone(compensation)
    payments = (await services.payment.get("/payments", params={"order_id": str(order.id)},
                                           headers=services.admin())).json()
    assert [(p["status"], p["refunded_amount"]) for p in payments] == [("refunded", 2500)]
    assert await reservation(services, order.id) == "released"


async def test_out_of_stock_is_a_refusal(services: Services) -> None:
    order = an_order(services, quantity=10_000)
    refused = await run(services, order, S.RESERVE_INVENTORY)
    assert isinstance(refused, StepFailed)


async def test_compensating_what_never_happened_is_done_at_once(services: Services) -> None:
    order = an_order(services)
    for compensation in (Compensation.CANCEL_SHIPMENT, Compensation.REFUND_PAYMENT,
                         Compensation.RELEASE_INVENTORY):
        assert await run(services, order, compensation) == CompensationDone(compensation)
