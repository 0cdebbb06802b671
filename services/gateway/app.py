"""``create_app()``: the gateway on the shared core, without a database or event bus.

The core gives it what every service has (JSON logs with request ids, ``/health``,
``/ready``, ``/metrics``, tracing, the error model, CORS from ``KOMMERCE_CORS_ORIGINS`` with
preflights answered here, the breaker-guarded HTTP clients, Redis); this module adds the
route table with its hot reload and the rate limiter. Run it with
``python -m services.gateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.core.app import ServiceRuntime, create_service_app, serve
from services.core.auth import TOKENS
from services.core.health import ReadinessCheck
from services.core.revocation import RevocationList
from services.gateway import api
from services.gateway.ratelimit import RateLimiter
from services.gateway.service import Gateway
from services.gateway.settings import GatewaySettings

DESCRIPTION = """The platform's entry point: routes `/api/...` to the services by the route
table, verifies access tokens (signature, audience, revocation list) and passes the caller
on as `X-User-Id`/`X-User-Roles`,
limits requests per route and client, and answers CORS preflights."""


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    # Both run once the app exists; by then ``gateway`` below is bound.
    async def routes_ready() -> None:
        await gateway.check_routes()

    @asynccontextmanager
    async def run_gateway(app: FastAPI, runtime: ServiceRuntime) -> AsyncIterator[None]:
        runtime.http.max_connections = settings.upstream_max_connections
        if runtime.redis is not None:
            gateway.revocations = RevocationList(
                runtime.redis, prefix=settings.token_revocation_prefix,
                timeout_seconds=settings.token_revocation_timeout_seconds)
            gateway.limiter = RateLimiter(
                runtime.redis, key_prefix=settings.cache_key_prefix,
                timeout_seconds=settings.rate_limit_timeout_seconds)
        # Rate limits fail open, so Redis being down must not make every gateway replica
        # unready (and the whole shop unreachable): its check is left out of /ready.
        app.state.readiness_checks = [check for check in app.state.readiness_checks
                                      if check.name != "redis"]
        watch: asyncio.Task[None] | None = None
        if (watched := gateway.load_routes()) is not None:
            watch = asyncio.create_task(
                watched.watch(settings.config_reload_interval_seconds), name="watch:routes")
        try:
            yield
        finally:
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch

    app = create_service_app(
        settings, routers=[api.router], uses_database=False, uses_bus=False,
        lifespan_hooks=[run_gateway],
        readiness_checks=[ReadinessCheck("routes", routes_ready)],
        title="kommerce gateway", description=DESCRIPTION,
    )
    # The core's verifier, not a second one.
    gateway = api.GATEWAY.put(app, Gateway(settings, TOKENS.of_app(app)))
    return app


def main() -> None:
    """The gateway process: settings from the environment, served by uvicorn."""
    serve(create_app())
