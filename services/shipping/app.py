"""The shipping service's app: the core, plus the carriers to quote from.

Run with ``python -m services.shipping`` or ``uvicorn services.shipping.app:app``. The
built-in table-rate carrier is always present, so quotes work offline; carrier adapters
shaped like FedEx/UPS/USPS are passed in next to it once built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.core.app import ServiceRuntime, create_service_app
from services.shipping import api
from services.shipping.events import Publisher
from services.shipping.models import MIGRATIONS
from services.shipping.rates import Carrier, default_table_carrier
from services.shipping.service import ShippingService
from services.shipping.settings import ShippingSettings

DESCRIPTION = """Rate quotes by weight, size, zone and service level; shipments with label
records; carrier tracking events and delivery notifications as events."""


def create_app(settings: ShippingSettings | None = None,
               carriers: Sequence[Carrier] = ()) -> FastAPI:
    settings = settings or ShippingSettings()
    chosen: list[Carrier] = [*carriers, default_table_carrier(settings.rate_currency)]

    @asynccontextmanager
    async def lifespan(app: FastAPI, runtime: ServiceRuntime) -> AsyncIterator[None]:
        app.state.shipping = ShippingService(runtime.require_database(), chosen,
                                             Publisher(settings.service_name), settings)
        yield

    return create_service_app(
        settings, routers=[api.router], migrations=MIGRATIONS, lifespan_hooks=[lifespan],
        title="kommerce shipping", description=DESCRIPTION,
    )


def __getattr__(name: str) -> FastAPI:
    """``services.shipping.app:app`` for uvicorn, built on first access from the environment."""
    if name == "app":
        globals()["app"] = built = create_app()
        return built
    raise AttributeError(name)
