"""The review service's app: the core plus the review rules.

Run with ``python -m services.review`` or ``uvicorn services.review.app:app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.core.app import Consume, ServiceRuntime, create_service_app, lazy_app
from services.core.http import ServiceClient
from services.core.transient import RetryLater
from services.review import api, events
from services.review.models import MIGRATIONS
from services.review.service import ReviewService
from services.review.settings import ReviewSettings

DESCRIPTION = """Product reviews with 1-5 star ratings, moderation (an automatic screen and
an admin queue), helpful votes and cached rating summaries; publishes review.created,
review.approved and rating.changed; marks reviews of bought products as verified purchases
from the order service's events."""


def create_app(settings: ReviewSettings | None = None) -> FastAPI:
    settings = settings or ReviewSettings()
    # The core's HTTP clients exist once it is up; the order-event handlers look it up then.
    holder: dict[str, ServiceClient] = {}

    @asynccontextmanager
    async def components(app: FastAPI, runtime: ServiceRuntime) -> AsyncIterator[None]:
        cache = runtime.require_cache().scoped("rating", settings.rating_cache_ttl_seconds)
        api.REVIEWS.put(app, ReviewService(runtime.require_database(), cache, settings))
        if settings.product_service_url is not None:
            holder["product"] = runtime.http.client("product", settings.product_service_url)
        yield
        holder.clear()

    def catalog() -> ServiceClient | None:
        if settings.product_service_url is not None and "product" not in holder:
            raise RetryLater("the review service is not started yet")
        return holder.get("product")

    return create_service_app(
        settings, routers=[api.router], migrations=MIGRATIONS, lifespan_hooks=[components],
        consumers=[Consume(settings.order_topic, events.order_handlers(catalog))],
        title="kommerce review", description=DESCRIPTION,
    )


#: ``services.review.app:app`` for uvicorn, built on first access from the environment.
__getattr__ = lazy_app(create_app, globals())
