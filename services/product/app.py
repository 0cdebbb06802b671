"""The product service's app: the core, plus shard routing, the services and the sweeper.

Run with ``python -m services.product`` or ``uvicorn services.product.app:app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.core.app import ServiceRuntime, create_service_app, lazy_app
from services.core.health import ReadinessCheck
from services.core.middleware import CachedRoute
from services.core.state import AppState
from services.product import api
from services.product.inventory import InventoryService
from services.product.models import MIGRATIONS
from services.product.repository import ShardRouter
from services.product.service import CatalogService
from services.product.settings import ProductSettings

log = logging.getLogger(__name__)

DESCRIPTION = """Catalog (categories, products, variants, prices), inventory with
reservations that never oversell, a Redis cache-aside for product reads, and routing by the
ShardLayout's shard map. Amounts are integers in the currency's minor unit."""


#: The shard router, for ``/ready`` checks and tests.
SHARDS = AppState[ShardRouter]("shards")


class ProductComponents:
    """What the service adds to the core, built once the core is up and torn down first."""

    def __init__(self, settings: ProductSettings) -> None:
        self.settings = settings
        self.shards: ShardRouter | None = None
        self.catalog: CatalogService | None = None

    @asynccontextmanager
    async def lifespan(self, app: FastAPI, runtime: ServiceRuntime) -> AsyncIterator[None]:
        settings = self.settings
        shards = ShardRouter(runtime.require_database(), settings, runtime.shard_map,
                             runtime.bus)
        self.shards = shards
        try:
            await shards.start()
        except Exception as exc:  # routed requests retry the shard; /ready reports it
            log.error("not every shard could be opened at start-up: %r", exc)
        # Near: every change to a product document goes through CatalogService.invalidate.
        cache = runtime.require_cache().scoped("product", settings.product_cache_ttl_seconds,
                                               near=True)
        catalog = CatalogService(shards, cache, settings)
        inventory = InventoryService(shards, catalog, settings)
        SHARDS.put(app, shards)
        api.CATALOG.put(app, catalog)
        api.INVENTORY.put(app, inventory)
        self.catalog = catalog
        sweeper = asyncio.create_task(
            inventory.run_sweeper(settings.reservation_sweep_interval_seconds),
            name="reservation-sweeper")
        try:
            yield
        finally:
            self.catalog = None
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await shards.close()

    def near_product(self, product_id: str) -> bytes | None:
        """``GET /products/{product_id}`` from the near cache, once the catalog is up."""
        catalog = self.catalog
        return None if catalog is None else catalog.near_product_json(product_id)

    async def ping_shards(self) -> None:
        if self.shards is not None:
            await self.shards.ping()


def create_app(settings: ProductSettings | None = None) -> FastAPI:
    settings = settings or ProductSettings()
    components = ProductComponents(settings)
    return create_service_app(
        settings, routers=[api.router], migrations=MIGRATIONS,
        lifespan_hooks=[components.lifespan],
        readiness_checks=[ReadinessCheck("shards", components.ping_shards, timeout_seconds=3)],
        cached_routes=[CachedRoute("/products/{product_id}", components.near_product)],
        title="kommerce product", description=DESCRIPTION,
    )


#: ``services.product.app:app`` for uvicorn, built on first access from the environment.
__getattr__ = lazy_app(create_app, globals())
