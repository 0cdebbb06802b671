"""``create_app()``: the user service on the shared core.

Besides what the core wires (database migrated at start-up, Redis, outbox relay, tokens,
health, metrics), the service holds one :class:`LoginThrottle`, sizes the password-hashing
pool from its settings and, when configured, makes sure the bootstrap admin exists before
it takes traffic.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.core.app import ServiceRuntime, create_service_app
from services.core.hashing import configure_password_hashing
from services.user import api
from services.user.migrations import MIGRATIONS
from services.user.schemas import normalise_email
from services.user.service import ensure_admin
from services.user.settings import UserSettings
from services.user.throttle import LoginThrottle

log = logging.getLogger(__name__)


@asynccontextmanager
async def user_lifespan(app: FastAPI, runtime: ServiceRuntime) -> AsyncIterator[None]:
    settings = runtime.settings
    assert isinstance(settings, UserSettings) and runtime.redis is not None
    api.LOGIN_THROTTLE.put(app, LoginThrottle(
        runtime.redis, prefix=settings.cache_key_prefix,
        max_per_account=settings.login_max_failures_per_email,
        max_per_address=settings.login_max_failures_per_ip,
        window_seconds=settings.login_failure_window_seconds))
    if settings.bootstrap_admin_email and settings.bootstrap_admin_password:
        admin = await ensure_admin(
            runtime.require_database(), settings,
            normalise_email(settings.bootstrap_admin_email),
            settings.bootstrap_admin_password.get_secret_value())
        if admin is not None:
            log.info("bootstrap admin %s is ready", admin.email)
    yield


def create_app(settings: UserSettings | None = None) -> FastAPI:
    settings = settings or UserSettings()
    configure_password_hashing(settings.password_hash_workers,
                               settings.password_hash_queue_limit,
                               settings.password_hash_max_wait_seconds)
    return create_service_app(
        settings, routers=api.routers, migrations=MIGRATIONS,
        lifespan_hooks=[user_lifespan],
        title="kommerce user",
        description="Accounts, sessions (JWT access tokens and rotating refresh tokens), "
        "profile, address book, preferences and roles.",
    )
