"""The order service's app: the core, the saga orchestrator and its timer.

Run with ``python -m services.order`` or ``uvicorn services.order.app:app``. By default the
saga's participants are the product, payment and shipping services over HTTP
(:class:`~services.order.participants.HttpParticipants`) and prices come from the product
service by variant id (:class:`~services.order.pricing.HttpPricing`), both through the
core's breaker-guarded clients, which exist only once the core is up — hence built in the
lifespan. Tests may hand in their own participants and pricing instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from kommerce.contracts.events.payment import PAYMENT_TOPIC
from kommerce.contracts.events.shipping import SHIPPING_TOPIC
from services.core.app import Consume, ServiceRuntime, create_service_app, lazy_app
from services.core.state import AppState
from services.order import api, events
from services.order.cart import CartStore
from services.order.models import MIGRATIONS
from services.order.orchestrator import Orchestrator, Participants
from services.order.participants import HttpParticipants
from services.order.pricing import HttpPricing
from services.order.saga import SagaPolicy
from services.order.service import CartService, OrderService, Pricing
from services.order.settings import OrderSettings

DESCRIPTION = """Checkout as a saga — reserve stock, charge, create the shipment, confirm —
with compensation in reverse order on any failure; order history and a status timeline.
Amounts are integers in the currency's minor unit."""


#: The saga's orchestrator, for tests and tools that drive it directly.
ORCHESTRATOR = AppState[Orchestrator]("orchestrator")


def policy_from(settings: OrderSettings) -> SagaPolicy:
    return SagaPolicy(
        step_timeout=timedelta(seconds=settings.saga_step_timeout_seconds),
        max_attempts=settings.saga_max_attempts,
        customer_action_timeout=timedelta(
            seconds=settings.saga_customer_action_timeout_seconds))


def http_participants(settings: OrderSettings, runtime: ServiceRuntime) -> HttpParticipants:
    clients = runtime.http
    return HttpParticipants(
        runtime.tokens, settings.service_name,
        product=clients.client("product", settings.product_service_url),
        payment=clients.client("payment", settings.payment_service_url),
        shipping=clients.client("shipping", settings.shipping_service_url),
        reservation_ttl_seconds=settings.reservation_ttl_seconds)


def create_app(settings: OrderSettings | None = None, participants: Participants | None = None,
               pricing: Pricing | None = None) -> FastAPI:
    settings = settings or OrderSettings()
    holder: dict[str, Orchestrator] = {}

    def orchestrator() -> Orchestrator:
        # Consumers are declared before the lifespan builds the orchestrator.
        return holder["orchestrator"]

    @asynccontextmanager
    async def lifespan(app: FastAPI, runtime: ServiceRuntime) -> AsyncIterator[None]:
        doers = participants or http_participants(settings, runtime)
        prices = pricing or HttpPricing(
            runtime.http.client("product", settings.product_service_url))
        orchestrator = Orchestrator(runtime.require_database(), doers,
                                    settings.service_name, policy_from(settings),
                                    inline_concurrency=settings.saga_inline_concurrency)
        holder["orchestrator"] = orchestrator
        ORCHESTRATOR.put(app, orchestrator)
        orders = api.ORDERS.put(app, OrderService(runtime.require_database(), orchestrator,
                                                  prices))
        api.CARTS.put(app, CartService(
            CartStore(runtime.require_cache().redis, settings.cache_key_prefix,
                      settings.cart_ttl_seconds), prices, orders))
        timers = asyncio.create_task(
            orchestrator.run_timers(settings.saga_timer_interval_seconds), name="saga-timers")
        try:
            yield
        finally:
            timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timers
            await orchestrator.close()

    return create_service_app(
        settings, routers=[api.router], migrations=MIGRATIONS, lifespan_hooks=[lifespan],
        consumers=[Consume(f"{settings.service_name}.events", events.own_handlers(orchestrator)),
                   Consume(PAYMENT_TOPIC, events.payment_handlers(orchestrator)),
                   Consume(SHIPPING_TOPIC,
                           events.shipping_handlers(settings.service_name))],
        title="kommerce order", description=DESCRIPTION,
    )


#: ``services.order.app:app`` for uvicorn, built on first access from the environment.
__getattr__ = lazy_app(create_app, globals())
