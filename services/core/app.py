"""``create_service_app``: everything a service needs, wired in one call.

A service's ``app.py`` reads::

    def create_app(settings: ProductSettings | None = None) -> FastAPI:
        settings = settings or ProductSettings()
        return create_service_app(
            settings, routers=[api.router], migrations=MIGRATIONS,
            consumers=[Consume("order.events", events.handlers)],
        )

and gets: JSON logs with request ids, metrics and ``/metrics``, tracing, the error model,
CORS, ``/health`` and ``/ready``, the database (migrated at start-up), Redis and the cache,
the event bus with the outbox relay and its consumers, tokens, the breaker-guarded HTTP
clients and, when configured, the shard map — all on ``app.state.runtime`` and reachable
from routes through the dependencies below.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis
from starlette.types import Receive, Scope, Send
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from services.core import migrations as core_migrations
from services.core.auth import TOKENS, TokenService
from services.core.cache import Cache, NearCache
from services.core.db import DATABASE, Database
from services.core.errors import ERROR_RESPONSES, install_error_handlers
from services.core.events.bus import EventBus, bus_from_settings
from services.core.events.consumer import (
    EventConsumer,
    EventHandlers,
    idempotent,
    unless_settled,
)
from services.core.events.outbox import OutboxRelay
from services.core.health import READINESS_CHECKS, ReadinessCheck, health_router
from services.core.http import Breakers, HttpClients
from services.core.logging import configure_logging
from services.core.metrics import HttpMetrics, metrics_router
from services.core.middleware import CachedRoute, RequestObservationMiddleware
from services.core.migrations import Migrations
from services.core.reload import WatchedFile
from services.core.settings import ServiceSettings
from services.core.shardmap import ShardMapWatcher
from services.core.state import SETTINGS, AppState
from services.core.tracing import fastapi_telemetry, setup_tracing
from services.core.transient import is_transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Consume:
    """Run ``handlers`` for events on ``topic``, as consumer group ``group`` (default: the
    service name), idempotently in the service's database."""

    topic: str
    handlers: EventHandlers
    group: str | None = None


@dataclass
class ServiceRuntime:
    """What a running service holds; ``app.state.runtime``."""

    settings: ServiceSettings
    tokens: TokenService
    http: HttpClients
    metrics: HttpMetrics
    tracer_provider: TracerProvider | None = None
    database: Database | None = None
    redis: Redis | None = None
    cache: Cache | None = None
    near_cache: NearCache | None = None
    bus: EventBus | None = None
    shard_map: ShardMapWatcher | None = None
    relay: OutboxRelay | None = None
    consumers: list[EventConsumer] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    watchers: list[asyncio.Task[None]] = field(default_factory=list)

    def require_database(self) -> Database:
        if self.database is None:
            raise RuntimeError("this service runs without a database")
        return self.database

    def require_cache(self) -> Cache:
        if self.cache is None:
            raise RuntimeError("this service runs without Redis")
        return self.cache

    def require_bus(self) -> EventBus:
        if self.bus is None:
            raise RuntimeError("this service runs without an event bus")
        return self.bus


class ServiceApp(FastAPI):
    """FastAPI with the core's request observation (:mod:`services.core.middleware`) as
    its outermost layer, outside even FastAPI's own error and telemetry layers, so that a
    read answered from the near cache costs none of them (they are a third of the CPU of
    such a read). Only when tracing is off: with tracing on, the observation is an ordinary
    middleware inside the request's span, so access lines carry the trace id.
    """

    observation: RequestObservationMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.observation is None:
            await super().__call__(scope, receive, send)
        else:
            await self.observation(scope, receive, send)


#: ``async with hook(app, runtime): ...`` around the service's lifetime, after the core is up.
LifespanHook = Callable[[FastAPI, ServiceRuntime], AbstractAsyncContextManager[None]]


def create_service_app(
    settings: ServiceSettings,
    *,
    routers: Sequence[APIRouter] = (),
    migrations: Migrations | None = None,
    uses_database: bool = True,
    uses_redis: bool = True,
    uses_bus: bool = True,
    consumers: Sequence[Consume] = (),
    lifespan_hooks: Sequence[LifespanHook] = (),
    readiness_checks: Sequence[ReadinessCheck] = (),
    cached_routes: Sequence[CachedRoute] = (),
    title: str | None = None,
    description: str | None = None,
) -> FastAPI:
    """A FastAPI app for one service with the whole core wired in.

    ``uses_*`` leave out what a service does not have (the gateway has no database);
    ``migrations`` are run at start-up when ``settings.migrate_on_startup`` (the core's own
    tables are migrated even without them); ``consumers`` run as idempotent consumer groups;
    ``lifespan_hooks`` wrap the service's own start/stop (e.g. opening shard engines) and
    run after the core is up; ``readiness_checks`` add to the database/Redis/bus checks;
    ``cached_routes`` are GET routes answered straight from the near cache when it holds
    the document (see :mod:`services.core.middleware`; not while tracing is on, so that
    every request still gets its span).
    """
    if uses_bus and not uses_redis and settings.event_bus == "redis":
        raise ValueError("the redis event bus needs uses_redis=True")
    if consumers and not (uses_bus and uses_database):
        raise ValueError("consumers need the bus and a database (for idempotency)")
    configure_logging(settings.service_name, settings.log_level, json=settings.log_json)
    metrics = HttpMetrics()
    tokens = TokenService(settings)
    tracer_provider = setup_tracing(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime = ServiceRuntime(
                settings=settings, tokens=tokens,
                http=HttpClients(user_agent=f"kommerce-{settings.service_name}"),
                metrics=metrics, tracer_provider=tracer_provider,
            )
            RUNTIME.put(app, runtime)
            checks: list[ReadinessCheck] = []
            stack.push_async_callback(runtime.http.aclose)

            if uses_database:
                runtime.database = Database.from_settings(settings)
                stack.push_async_callback(runtime.database.dispose)
                DATABASE.put(app, runtime.database)
                checks.append(ReadinessCheck("database", runtime.database.ping))
                if settings.migrate_on_startup:
                    await _migrate(runtime.database, migrations)
            if uses_redis:
                runtime.redis = Redis.from_url(
                    settings.redis_url, socket_connect_timeout=2, socket_timeout=5,
                    health_check_interval=30, retry_on_timeout=True,
                )
                stack.push_async_callback(runtime.redis.aclose)
                near = None
                if settings.cache_near_enabled:
                    near = NearCache(runtime.redis, f"{settings.cache_key_prefix}invalidations",
                                     max_entries=settings.cache_near_max_entries,
                                     ttl_seconds=settings.cache_near_ttl_seconds)
                runtime.cache = Cache(runtime.redis, prefix=settings.cache_key_prefix,
                                      name=settings.service_name,
                                      default_ttl=settings.cache_ttl_seconds, near=near)
                runtime.near_cache = near
                app.state.cache = runtime.cache
                checks.append(ReadinessCheck("redis", runtime.redis.ping))
            if uses_bus:
                runtime.bus = bus_from_settings(settings, runtime.redis)
                await runtime.bus.start()
                stack.push_async_callback(runtime.bus.stop)
                app.state.bus = runtime.bus
                checks.append(ReadinessCheck("bus", runtime.bus.ping))
            READINESS_CHECKS.put(app, checks + list(readiness_checks))

            # Background loops start once everything they use is up, and stop first.
            stack.push_async_callback(_stop_tasks, runtime)
            _watch_breaker_config(runtime)
            if runtime.near_cache is not None:
                await _start_near_cache(runtime, runtime.near_cache)
            if settings.shard_map_path is not None:
                shard_map = ShardMapWatcher(settings.shard_map_path, settings.secrets_dir)
                runtime.shard_map = shard_map
                _start_watch(runtime, shard_map)
            if runtime.bus is not None:
                if runtime.database is not None and settings.outbox_enabled:
                    runtime.relay = OutboxRelay(
                        runtime.database, runtime.bus, batch_size=settings.outbox_batch_size,
                        poll_interval=settings.outbox_poll_interval_seconds,
                        linger_seconds=settings.outbox_linger_seconds)
                    _start(runtime, "outbox-relay", runtime.relay.run)
                for consume in consumers:
                    _start_consumer(runtime, consume)

            for hook in lifespan_hooks:
                await stack.enter_async_context(hook(app, runtime))
            log.info("%s started", settings.service_name)
            if settings.gc_freeze_after_startup:
                # Not preceded by gc.collect(): in a test process that starts hundreds of
                # apps a full collection each time would cost minutes; what garbage is
                # frozen with the rest is given back by gc.unfreeze() at shutdown.
                gc.freeze()
            try:
                yield
            finally:
                if settings.gc_freeze_after_startup:
                    gc.unfreeze()
            log.info("%s stopping", settings.service_name)
        if tracer_provider is not None:
            tracer_provider.shutdown()

    app = ServiceApp(
        title=title or f"kommerce {settings.service_name}",
        description=description or "",
        version=settings.version,
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        telemetry=fastapi_telemetry(tracer_provider),
    )
    SETTINGS.put(app, settings)
    TOKENS.put(app, tokens)
    app.state.tracer_provider = tracer_provider
    install_error_handlers(app)
    if settings.cors_origins:
        wildcard = settings.cors_origins == ["*"]
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins,
            allow_credentials=not wildcard, allow_methods=["*"], allow_headers=["*"],
            expose_headers=["X-Request-Id", "Retry-After"], max_age=600,
        )
    # Outermost of ours: every log line of the request gets its id.
    if tracer_provider is None:
        app.observation = RequestObservationMiddleware(
            partial(FastAPI.__call__, app), metrics, cached_routes=cached_routes,
            cors=bool(settings.cors_origins), color=settings.color)
    else:
        app.add_middleware(RequestObservationMiddleware, metrics=metrics, color=settings.color)
    app.include_router(health_router())
    app.include_router(metrics_router(metrics))
    for router in routers:
        app.include_router(router)
    return app


async def _migrate(database: Database, migrations: Migrations | None) -> None:
    """Migrate, waiting out a database that is still starting (as after a node reboot)."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(60), wait=wait_exponential(multiplier=0.2, max=5),
        retry=retry_if_exception(is_transient), reraise=True,
    ):
        with attempt:
            await core_migrations.upgrade(database, migrations)


def _watch_breaker_config(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    breakers, watched = Breakers.watching(settings.breaker_config_path)
    runtime.http.breakers = breakers
    if watched is not None:
        _start_watch(runtime, watched)


async def _start_near_cache(runtime: ServiceRuntime, near: NearCache) -> None:
    """Start the near cache's invalidation listener and give it a moment to subscribe, so
    the first reads can already be served in-process (until then they go to Redis)."""
    runtime.watchers.append(asyncio.create_task(near.run(), name="near-cache-invalidations"))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(near.subscribed.wait(), timeout=2)


def _start_watch(runtime: ServiceRuntime, watched: WatchedFile[Any]) -> None:
    interval = runtime.settings.config_reload_interval_seconds
    runtime.watchers.append(
        asyncio.create_task(watched.watch(interval), name=f"watch:{watched.name}"))


def _start_consumer(runtime: ServiceRuntime, consume: Consume) -> None:
    settings = runtime.settings
    group = consume.group or settings.service_name
    handler = idempotent(runtime.require_database(), group, consume.handlers.dispatch)
    if consume.handlers.settled is not None:
        handler = unless_settled(consume.handlers.settled, handler)
    consumer = EventConsumer(
        runtime.require_bus(), consume.topic, group, handler,
        accepts=consume.handlers.handles, max_attempts=settings.event_max_attempts,
    )
    runtime.consumers.append(consumer)
    _start(runtime, f"consumer:{consume.topic}:{group}", consumer.run)


def _start(runtime: ServiceRuntime, name: str,
           run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    runtime.tasks.append(asyncio.create_task(_supervise(name, run), name=name))


async def _supervise(name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Keep a background loop alive: a crash is logged and the loop restarted after a pause."""
    failures = 0
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            log.exception("background task %s crashed; restarting", name)
            await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))


async def _stop_tasks(runtime: ServiceRuntime) -> None:
    """Let consumers and the relay finish the message in hand, then cancel what is left."""
    for watcher in runtime.watchers:
        watcher.cancel()
    for consumer in runtime.consumers:
        consumer.stop()
    if runtime.relay is not None:
        runtime.relay.stop()
    pending: set[asyncio.Task[None]] = set()
    if runtime.tasks:
        _, pending = await asyncio.wait(runtime.tasks, timeout=10)
        for task in pending:
            task.cancel()
    for task in [*runtime.watchers, *pending]:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def lazy_app(create_app: Callable[[], FastAPI],
             module_globals: dict[str, Any]) -> Callable[[str], FastAPI]:
    """A module ``__getattr__`` that builds the module's ``app`` on first access (for
    ``uvicorn services.<name>.app:app``) and keeps it, so importing the module reads no
    settings and opens nothing::

        __getattr__ = lazy_app(create_app, globals())
    """

    def __getattr__(name: str) -> FastAPI:
        if name == "app":
            module_globals["app"] = built = create_app()
            return built
        raise AttributeError(name)

    return __getattr__


def serve(app: FastAPI) -> None:
    """Run ``app`` with uvicorn on the settings' host and port: a service's entry point.

    uvicorn keeps its hands off logging (our JSON handler is already installed) and writes
    no access log of its own; forwarded headers count only from ``trusted_proxies``; SIGTERM
    drains in-flight requests before the lifespan ends.
    """
    import uvicorn  # only the process that serves needs it

    settings = SETTINGS.of_app(app)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                access_log=False, proxy_headers=True,
                forwarded_allow_ips=settings.trusted_proxies,
                timeout_graceful_shutdown=20)


# -- dependencies ----------------------------------------------------------------------------


#: What the running service holds, set by the lifespan.
RUNTIME = AppState[ServiceRuntime]("runtime")


def get_runtime(request: Request) -> ServiceRuntime:
    return RUNTIME.of(request)


def get_cache(request: Request) -> Cache:
    return get_runtime(request).require_cache()


Runtime = Annotated[ServiceRuntime, Depends(get_runtime)]
CacheDep = Annotated[Cache, Depends(get_cache)]
