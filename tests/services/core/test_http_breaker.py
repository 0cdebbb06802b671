"""The breaker-guarded HTTP client against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from kommerce.testbed.ports import free_port
from services.core.breaker import BreakerPolicy, BreakerState
from services.core.http import (
    BreakerConfig,
    Breakers,
    CircuitOpenError,
    HttpClients,
    UpstreamTimeout,
    UpstreamUnavailable,
    load_breaker_config,
)
from services.core.logging import bind_request_id
from tests.services.support import eventually


@dataclass
class Upstream:
    """A tiny ASGI service whose health the test controls."""

    status: int = 200
    delay: float = 0.0
    hits: int = 0
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)  # method, target, body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.hits += 1
        self.seen_headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        query = scope["query_string"].decode()
        self.seen.append((scope["method"], scope["path"] + ("?" + query if query else ""), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    app = Upstream()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await eventually(started, within=10, what="the upstream server to start")
    yield app, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, 10)


def clients(**policy: float) -> HttpClients:
    return HttpClients(Breakers(BreakerConfig(default=BreakerPolicy(**policy))))  # type: ignore[arg-type]


FAST = {"volume_threshold": 4, "error_threshold_percentage": 50, "reset_timeout_seconds": 0.3,
        "timeout_seconds": 2.0}


async def test_failures_open_the_breaker_and_then_calls_fail_fast(
    upstream: tuple[Upstream, str],
) -> None:
    server, url = upstream
    http = clients(**FAST)
    payment = http.client("payment", url)
    server.status = 503
    try:
        for _ in range(4):
            assert (await payment.get("/charge")).status_code == 503
        assert payment.breaker.state is BreakerState.OPEN

        with pytest.raises(CircuitOpenError) as refused:
            await payment.get("/charge")
        assert refused.value.status_code == 503
        assert refused.value.headers["Retry-After"] == "1"
        assert server.hits == 4  # the rejected call never left the process
    finally:
        await http.aclose()


async def test_after_the_reset_timeout_a_successful_trial_closes_it(
    upstream: tuple[Upstream, str],
) -> None:
    server, url = upstream
    http = clients(**FAST)
    payment = http.client("payment", url)
    server.status = 500
    try:
        for _ in range(4):
            await payment.get("/charge")
        server.status = 200
        await asyncio.sleep(0.35)

        assert payment.breaker.state is BreakerState.HALF_OPEN
        assert (await payment.get("/charge")).status_code == 200
        assert payment.breaker.state is BreakerState.CLOSED
        assert (await payment.get("/charge")).status_code == 200
    finally:
        await http.aclose()


async def test_a_failed_trial_opens_it_again(upstream: tuple[Upstream, str]) -> None:
    server, url = upstream
    http = clients(**FAST)
    payment = http.client("payment", url)
    server.status = 500
    try:
        for _ in range(4):
            await payment.get("/charge")
        await asyncio.sleep(0.35)

        await payment.get("/charge")  # the trial, still failing

        assert payment.breaker.state is BreakerState.OPEN
        with pytest.raises(CircuitOpenError):
            await payment.get("/charge")
    finally:
        await http.aclose()


async def test_slow_answers_time_out_and_count_as_failures(
    upstream: tuple[Upstream, str],
) -> None:
    server, url = upstream
    http = clients(**{**FAST, "timeout_seconds": 0.1, "volume_threshold": 2})
    shipping = http.client("shipping", url)
    server.delay = 0.5
    try:
        for _ in range(2):
            with pytest.raises(UpstreamTimeout) as slow:
                await shipping.get("/rates")
            assert slow.value.status_code == 504

        assert shipping.breaker.state is BreakerState.OPEN
    finally:
        await http.aclose()


async def test_an_unreachable_service_counts_as_failure() -> None:
    http = clients(**{**FAST, "volume_threshold": 2})
    nowhere = http.client("nowhere", f"http://127.0.0.1:{free_port()}")
    try:
        for _ in range(2):
            with pytest.raises(UpstreamUnavailable):
                await nowhere.get("/")

        assert nowhere.breaker.state is BreakerState.OPEN
    finally:
        await http.aclose()


async def test_client_errors_do_not_trip_the_breaker(upstream: tuple[Upstream, str]) -> None:
    server, url = upstream
    http = clients(**FAST)
    user = http.client("user", url)
    server.status = 404
    try:
        for _ in range(10):
            await user.get("/users/unknown")

        assert user.breaker.state is BreakerState.CLOSED
    finally:
        await http.aclose()


async def test_calls_carry_the_request_id_on(upstream: tuple[Upstream, str]) -> None:
    server, url = upstream
    http = clients()
    bind_request_id("req-77")
    try:
        await http.client("product", url).get("/products/1")
    finally:
        bind_request_id(None)
        await http.aclose()

    assert server.seen_headers[-1]["x-request-id"] == "req-77"


async def test_a_call_sends_json_and_query_and_answers_as_an_httpx_response(
        upstream: tuple[Upstream, str]) -> None:
    server, url = upstream
    http = clients()
    try:
        posted = await http.client("product", url).post(
            "/inventory/reservations", json={"id": "r-1", "lines": [1, 2]},
            headers={"Idempotency-Key": "k-1"})
        listed = await http.client("product", url).get(
            "/products", params={"limit": 5, "in_stock": True, "cursor": "a b"})
    finally:
        await http.aclose()

    assert isinstance(posted, httpx.Response)
    assert (posted.status_code, posted.json()) == (200, {"ok": True})
    assert posted.headers["content-type"] == "application/json"
    method, target, body = server.seen[0]
    assert (method, target, orjson.loads(body)) == (
        "POST", "/inventory/reservations", {"id": "r-1", "lines": [1, 2]})
    assert server.seen_headers[0]["content-type"] == "application/json"
    assert server.seen_headers[0]["idempotency-key"] == "k-1"
    assert server.seen[1][:2] == ("GET", "/products?limit=5&in_stock=true&cursor=a+b")
    assert str(listed.request.url) == f"{url}/products?limit=5&in_stock=true&cursor=a+b"


async def test_an_answer_cut_off_after_its_headers_is_unavailable_not_a_crash() -> None:
    async def cut_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut_off, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = clients(**FAST)
    try:
        with pytest.raises(UpstreamUnavailable):
            await http.client("product", f"http://127.0.0.1:{port}").get("/products/1")
    finally:
        await http.aclose()
        server.close()


def _write(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(data))
    os.replace(tmp, path)


def test_config_file_defaults_and_per_target_overrides(tmp_path: Path) -> None:
    path = tmp_path / "breakers.json"
    _write(path, {"default": {"timeoutSeconds": 2},
                  "targets": {"payment": {"errorThresholdPercentage": 25}}})

    config = load_breaker_config(path)

    assert config.policy_for("payment").timeout_seconds == 2
    assert config.policy_for("payment").error_threshold_percentage == 25
    assert config.policy_for("user").error_threshold_percentage == 50


def test_a_folder_of_single_target_policies_merges(tmp_path: Path) -> None:
    _write(tmp_path / "payment.json", {"target": "payment", "timeoutSeconds": 5})
    _write(tmp_path / "shipping.json", {"target": "shipping", "resetTimeoutSeconds": 10})

    config = load_breaker_config(tmp_path)

    assert config.policy_for("payment").timeout_seconds == 5
    assert config.policy_for("shipping").reset_timeout_seconds == 10


def test_breakers_follow_the_config_file_and_keep_the_old_one_when_bad(tmp_path: Path) -> None:
    path = tmp_path / "breakers.json"
    _write(path, {"targets": {"payment": {"timeoutSeconds": 3}}})
    breakers, watched = Breakers.watching(path)
    assert watched is not None
    payment = breakers.get("payment")

    _write(path, {"targets": {"payment": {"timeoutSeconds": 1.5, "resetTimeoutSeconds": 5}}})
    assert watched.check()
    assert (payment.policy.timeout_seconds, payment.policy.reset_timeout_seconds) == (1.5, 5)

    _write(path, {"targets": {"payment": {"timeoutSeconds": -1}}})
    assert not watched.check()
    assert payment.policy.timeout_seconds == 1.5


def test_no_config_file_means_the_reference_defaults(tmp_path: Path) -> None:
    breakers, watched = Breakers.watching(tmp_path / "not-mounted-yet.json")

    assert watched is not None
    assert breakers.get("payment").policy == BreakerPolicy()


def test_the_operators_rendered_configmap_configures_the_breakers(tmp_path: Path) -> None:
    spec_module = pytest.importorskip("operators.circuitbreaker.spec")
    render = pytest.importorskip("operators.circuitbreaker.render")
    spec = spec_module.CircuitBreakerPolicySpec.model_validate({
        "targetRef": {"name": "payment"},
        "client": {"timeout": "5s", "errorThresholdPercentage": 25, "resetTimeout": "1m",
                   "rollingWindow": "20s", "rollingBuckets": 4, "volumeThreshold": 8}})
    config_map = render.render_client_breakers(
        "shop", [render.PolicyRef(name="payment-breaker", uid="u-1", spec=spec)])
    for key, text in config_map["data"].items():
        (tmp_path / key).write_text(text)

    policy = load_breaker_config(tmp_path).policy_for("payment")

    assert policy == BreakerPolicy(
        timeout_seconds=5, error_threshold_percentage=25, reset_timeout_seconds=60,
        rolling_window_seconds=20, rolling_window_buckets=4, volume_threshold=8)
    assert load_breaker_config(tmp_path).policy_for("user") == BreakerPolicy()
