"""The order service's app: the core, the saga orchestrator and its timer.

The participants and the pricing source are handed in. :class:`~services.order.
participants.HttpParticipants` calls the product, payment and shipping services; a pricing
adapter over HTTP waits for the product service to look a variant's price up by variant id
alone, which is why there is no ``__main__`` yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from services.core.app import Consume, ServiceRuntime, create_service_app
from services.order import api, events
from services.order.cart import CartStore
from services.order.models import MIGRATIONS
from services.order.orchestrator import Orchestrator, Participants
from services.order.saga import SagaPolicy
from services.order.service import CartService, OrderService, Pricing
from services.order.settings import OrderSettings

DESCRIPTION = """Checkout as a saga — reserve stock, charge, create the shipment, confirm —
with compensation in reverse order on any failure; order history and a status timeline.
Amounts are integers in the currency's minor unit."""


def policy_from(settings: OrderSettings) -> SagaPolicy:
    return SagaPolicy(
        step_timeout=timedelta(seconds=settings.saga_step_timeout_seconds),
        max_attempts=settings.saga_max_attempts,
        customer_action_timeout=timedelta(
            seconds=settings.saga_customer_action_timeout_seconds))


def create_app(settings: OrderSettings, participants: Participants,
               pricing: Pricing) -> FastAPI:
    holder: dict[str, Orchestrator] = {}

    def orchestrator() -> Orchestrator:
        # Consumers are declared before the lifespan builds the orchestrator.
        return holder["orchestrator"]

    @asynccontextmanager
    async def lifespan(app: FastAPI, runtime: ServiceRuntime) -> AsyncIterator[None]:
        orchestrator = Orchestrator(runtime.require_database(), participants,
                                    settings.service_name, policy_from(settings))
        holder["orchestrator"] = orchestrator
        app.state.orchestrator = orchestrator
        orders = OrderService(runtime.require_database(), orchestrator, pricing)
        app.state.orders = orders
        app.state.carts = CartService(
            CartStore(runtime.require_cache().redis, settings.cache_key_prefix,
                      settings.cart_ttl_seconds), pricing, orders)
        timers = asyncio.create_task(
            orchestrator.run_timers(settings.saga_timer_interval_seconds), name="saga-timers")
        try:
            yield
        finally:
            timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timers

    return create_service_app(
        settings, routers=[api.router], migrations=MIGRATIONS, lifespan_hooks=[lifespan],
        consumers=[Consume(f"{settings.service_name}.events", events.own_handlers(orchestrator)),
                   Consume("payment.events", events.payment_handlers(orchestrator)),
                   Consume("shipping.events", events.shipping_handlers())],
        title="kommerce order", description=DESCRIPTION,
    )
