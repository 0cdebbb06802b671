"""The shipping service's app: the core, plus the carriers to quote from.

Run with ``python -m services.shipping`` or ``uvicorn services.shipping.app:app``. The
built-in table-rate carrier is always present, so quotes work offline; the FedEx, UPS and
USPS adapters join it for each carrier whose API the settings configure, each calling
through the core's breaker-guarded client (one breaker per carrier), which exists only once
the core is up — hence built in the lifespan. Tests may hand in carriers of their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.core.app import ServiceRuntime, create_service_app, lazy_app
from services.shipping import api
from services.shipping.carriers import (
    CarrierCredentials,
    FedExCarrier,
    UpsCarrier,
    UspsCarrier,
)
from services.shipping.models import MIGRATIONS
from services.shipping.rates import Carrier, default_table_carrier
from services.shipping.service import ShippingService
from services.shipping.settings import ShippingSettings

DESCRIPTION = """Rate quotes by weight, size, zone and service level; shipments with label
records; carrier tracking events and delivery notifications as events."""


def configured_carriers(settings: ShippingSettings, runtime: ServiceRuntime) -> list[Carrier]:
    """The carrier adapters whose API address and credentials are all set."""
    adapters: list[Carrier] = []
    for name, adapter in (("fedex", FedExCarrier), ("ups", UpsCarrier),
                          ("usps", UspsCarrier)):
        url = getattr(settings, f"{name}_api_url")
        client_id = getattr(settings, f"{name}_client_id")
        secret = getattr(settings, f"{name}_client_secret")
        if url and client_id and secret is not None:
            adapters.append(adapter(runtime.http.client(name, url), CarrierCredentials(
                client_id, secret.get_secret_value(),
                getattr(settings, f"{name}_account_number"))))
    return adapters


def create_app(settings: ShippingSettings | None = None,
               carriers: Sequence[Carrier] = ()) -> FastAPI:
    settings = settings or ShippingSettings()
    chosen: list[Carrier] = [*carriers, default_table_carrier(settings.rate_currency)]

    @asynccontextmanager
    async def lifespan(app: FastAPI, runtime: ServiceRuntime) -> AsyncIterator[None]:
        everyone = [*configured_carriers(settings, runtime), *chosen]
        api.SHIPPING.put(app, ShippingService(runtime.require_database(), everyone, settings))
        yield

    return create_service_app(
        settings, routers=[api.router], migrations=MIGRATIONS, lifespan_hooks=[lifespan],
        title="kommerce shipping", description=DESCRIPTION,
    )


#: ``services.shipping.app:app`` for uvicorn, built on first access from the environment.
__getattr__ = lazy_app(create_app, globals())
