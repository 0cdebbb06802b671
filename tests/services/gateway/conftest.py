"""Real servers for the gateway's tests: echo services on loopback behind a gateway that is
itself served by uvicorn on loopback, with the session's real Redis for rate limits.

Each test gets its own gateway (own route table file, breaker settings, Redis key prefix);
the echo services are shared and count hits per path, so tests use paths of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from kommerce.testbed.ports import free_port
from services.core.auth import TokenService
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from tests.services.support import eventually, unique

if TYPE_CHECKING:
    from kommerce.testbed.redis import RedisServer

ALLOWED_ORIGIN = "https://shop.example"
ALL = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass
class Echo:
    """An upstream service that answers every request with what it received.

    Query parameters steer it: ``sleep`` (seconds before answering), ``status``,
    ``stream`` (bytes to stream back, in ``chunk``-sized pieces; with ``hold`` the rest
    waits for :meth:`release` after the first chunk; with ``break`` the connection is
    dropped after it), ``cors`` (send its own CORS headers).
    """

    name: str
    url: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    holds: dict[str, asyncio.Event] = field(default_factory=dict)

    def release(self, hold: str) -> None:
        self.holds.setdefault(hold, asyncio.Event()).set()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=ALL)
        async def echo(request: Request) -> Response:
            self.hits[request.url.path] += 1
            query = request.query_params
            if sleep := _number(query.get("sleep")):
                await asyncio.sleep(min(sleep, 30))
            if size := _number(query.get("stream")):
                return StreamingResponse(
                    self._stream(int(size), int(_number(query.get("chunk")) or 65536),
                                 query.get("hold"), breaks="break" in query),
                    media_type="application/octet-stream")
            digest, length = hashlib.sha256(), 0
            try:
                async for chunk in request.stream():
                    digest.update(chunk)
                    length += len(chunk)
            except ClientDisconnect:  # the gateway cut an upload off (413)
                return Response(status_code=499)
            headers = {"x-served-by": self.name, "connection": "x-private-hop",
                       "x-private-hop": "secret"}
            if "cors" in query:
                headers["access-control-allow-origin"] = "*"
            return JSONResponse(
                {"service": self.name, "method": request.method, "path": request.url.path,
                 "raw_path": request.scope["raw_path"].decode("latin-1"),
                 "query": request.scope["query_string"].decode("latin-1"),
                 "headers": [[k.decode("latin-1"), v.decode("latin-1")]
                             for k, v in request.scope["headers"]],
                 "body_length": length, "body_sha256": digest.hexdigest()},
                status_code=_status(query.get("status")), headers=headers)

        return app

    async def _stream(self, size: int, chunk: int, hold: str | None,
                      breaks: bool = False) -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            if breaks and sent:
                raise ConnectionAbortedError("the echo breaks off its response on purpose")
            piece = min(chunk, size - sent)
            yield _pattern(sent, piece)
            sent += piece
            if hold is not None and sent == piece:
                await self.holds.setdefault(hold, asyncio.Event()).wait()


def _number(text: str | None) -> float | None:
    """A steering parameter, or None when absent or not a sane number (odd input from the
    fuzz tests must not make the echo itself fail)."""
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and 0 < value < 100_000_000 else None


def _status(text: str | None) -> int:
    status = int(_number(text) or 200)
    return status if 200 <= status <= 599 else 200


_BLOCK = bytes(range(256)) * 256


def _pattern(offset: int, length: int) -> bytes:
    """Deterministic bytes, so both ends can hash what a stream should hold."""
    start = offset % len(_BLOCK)
    return (_BLOCK[start:] + _BLOCK * (length // len(_BLOCK) + 1))[:length]


def pattern_sha256(size: int, chunk: int = 65536) -> str:
    digest = hashlib.sha256()
    for offset in range(0, size, chunk):
        digest.update(_pattern(offset, min(chunk, size - offset)))
    return digest.hexdigest()


@asynccontextmanager
async def serve_on_loopback(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, in this event loop."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on",
                                           log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()  # raises what stopped it
        return server.started

    await eventually(started, within=30, what="a loopback server to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture(scope="session")
async def echo_a() -> AsyncIterator[Echo]:
    echo = Echo("a")
    async with serve_on_loopback(echo.app()) as url:
        echo.url = url
        yield echo


@pytest.fixture(scope="session")
async def echo_b() -> AsyncIterator[Echo]:
    echo = Echo("b")
    async with serve_on_loopback(echo.app()) as url:
        echo.url = url
        yield echo


def route(prefix: str, upstream: str, *, service: str | None = None,
          methods: list[str] | None = None, auth: bool = False,
          per_minute: int | None = None) -> dict[str, Any]:
    """A route table entry as the operator renders it."""
    entry: dict[str, Any] = {"pathPrefix": prefix, "authRequired": auth,
                             "rateLimitPerMinute": per_minute,
                             "service": service or "svc" + prefix.replace("/", "-"),
                             "upstream": upstream}
    if methods is not None:
        entry["methods"] = methods
    return entry


def write_json(path: Path, document: Any) -> None:
    """Replace the file in one step, as the kubelet swaps a ConfigMap's files."""
    temporary = path.with_name(f".{path.name}.{unique('tmp')}")
    temporary.write_bytes(orjson.dumps(document))
    os.replace(temporary, path)


async def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET ``target`` byte for byte over a plain socket: HTTP clients normalise paths
    (``/a/../b`` → ``/b``) before sending, which is the very thing under test."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                     .encode())
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@dataclass
class RunningGateway:
    """A gateway served on loopback, and what a test needs around it."""

    url: str
    app: FastAPI
    settings: GatewaySettings
    client: httpx.AsyncClient

    @property
    def route_file(self) -> Path:
        assert self.settings.route_table is not None
        return self.settings.route_table

    def tokens(self) -> TokenService:
        return TokenService(self.settings)

    def bearer(self, user_id: str = "user-1", roles: tuple[str, ...] = ("customer",)
               ) -> dict[str, str]:
        token = self.tokens().issue_access(user_id, roles).token
        return {"Authorization": f"Bearer {token}"}


StartGateway = Callable[..., Awaitable[RunningGateway]]

#: Short breaker limits for the targets the failure tests use; every other target keeps
#: the reference's (3 s timeout), so large bodies on a busy machine are not cut short.
BREAKERS = {"default": {"timeoutSeconds": 10},
            "targets": {"svc-slow": {"timeoutSeconds": 0.5},
                        "svc-flaky": {"volumeThreshold": 4, "errorThresholdPercentage": 50,
                                      "resetTimeoutSeconds": 30},
                        "svc-trial": {"volumeThreshold": 2, "resetTimeoutSeconds": 0.3}}}


@pytest.fixture
async def start_gateway(redis_server: RedisServer, tmp_path: Path,
                        ) -> AsyncIterator[StartGateway]:
    """``await start_gateway(routes, **settings)``: a gateway on loopback with that table."""
    async with AsyncExitStack() as stack:

        async def start(routes: list[dict[str, Any]] | None, **overrides: Any
                        ) -> RunningGateway:
            folder = tmp_path / unique("gateway")
            folder.mkdir()
            route_file = folder / "routes.json"
            if routes is not None:
                write_json(route_file, {"version": "test-1", "routes": routes})
            breakers = folder / "breakers.json"
            write_json(breakers, BREAKERS)
            values: dict[str, Any] = {
                "environment": "test", "log_json": False, "redis_url": redis_server.url,
                "cache_prefix": unique("gw") + ":", "route_table": route_file,
                "breaker_config_path": breakers, "config_reload_interval_seconds": 0.05,
                "cors_origins": [ALLOWED_ORIGIN],
            }
            values.update(overrides)
            settings = GatewaySettings(**values)
            app = create_app(settings)
            url = await stack.enter_async_context(serve_on_loopback(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, timeout=30))
            return RunningGateway(url=url, app=app, settings=settings, client=client)

        yield start


