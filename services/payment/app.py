"""The payment service's app: the core, plus the payment gateway chosen by settings.

Run with ``python -m services.payment`` or ``uvicorn services.payment.app:app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.core.app import ServiceRuntime, create_service_app, lazy_app
from services.payment import api
from services.payment.models import MIGRATIONS
from services.payment.providers import PaymentGateway, gateway_from_settings
from services.payment.providers.stripe import StripeGateway
from services.payment.service import PaymentService
from services.payment.settings import PaymentSettings

DESCRIPTION = """Stripe PaymentIntents confirmed with tokenized payment methods, refunds,
signed webhooks and an append-only audit log. Only a card's brand and last four digits are
ever stored. Amounts are integers in the currency's minor unit."""


def create_app(settings: PaymentSettings | None = None,
               gateway: PaymentGateway | None = None) -> FastAPI:
    settings = settings or PaymentSettings()
    chosen = gateway or gateway_from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI, runtime: ServiceRuntime) -> AsyncIterator[None]:
        api.PAYMENTS.put(app, PaymentService(runtime.require_database(), chosen, settings))
        try:
            yield
        finally:
            if isinstance(chosen, StripeGateway):
                await chosen.aclose()

    return create_service_app(
        settings, routers=[api.router], migrations=MIGRATIONS, lifespan_hooks=[lifespan],
        title="kommerce payment", description=DESCRIPTION,
    )


#: ``services.payment.app:app`` for uvicorn, built on first access from the environment.
__getattr__ = lazy_app(create_app, globals())
