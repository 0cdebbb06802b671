"""The review service's app: the core plus the review rules.

Run with ``python -m services.review`` or ``uvicorn services.review.app:app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.core.app import ServiceRuntime, create_service_app
from services.review import api
from services.review.models import MIGRATIONS
from services.review.service import ReviewService
from services.review.settings import ReviewSettings

DESCRIPTION = """Product reviews with 1-5 star ratings, moderation (an automatic screen and
an admin queue), helpful votes and cached rating summaries; publishes review.created,
review.approved and rating.changed."""


def create_app(settings: ReviewSettings | None = None) -> FastAPI:
    settings = settings or ReviewSettings()

    @asynccontextmanager
    async def components(app: FastAPI, runtime: ServiceRuntime) -> AsyncIterator[None]:
        cache = runtime.require_cache().scoped("rating", settings.rating_cache_ttl_seconds)
        app.state.reviews = ReviewService(runtime.require_database(), cache, settings)
        yield

    return create_service_app(
        settings, routers=[api.router], migrations=MIGRATIONS, lifespan_hooks=[components],
        title="kommerce review", description=DESCRIPTION,
    )


def __getattr__(name: str) -> FastAPI:
    """``services.review.app:app`` for uvicorn, built on first access from the environment."""
    if name == "app":
        globals()["app"] = built = create_app()
        return built
    raise AttributeError(name)
