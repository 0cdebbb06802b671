"""A failing service gets the documented answers: 502 unreachable, 504 too slow, 503 while
its breaker is open — and the gateway itself stays healthy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from kommerce.testbed.ports import free_port

from .conftest import Echo, StartGateway, route

pytestmark = pytest.mark.redis


async def test_an_unreachable_service_is_502(start_gateway: StartGateway) -> None:
    gateway = await start_gateway([route("/api/down", f"http://127.0.0.1:{free_port()}")])

    response = await gateway.client.get("/api/down/x")

    assert response.status_code == 502
    assert response.json()["code"] == "upstream_unreachable"
    assert (await gateway.client.get("/health")).status_code == 200


async def test_a_service_slower_than_its_timeout_is_504(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/slow", echo_a.url, service="svc-slow")])

    started = time.perf_counter()
    response = await gateway.client.get("/api/slow/x?sleep=5")
    waited = time.perf_counter() - started

    assert response.status_code == 504
    assert response.json()["code"] == "upstream_timeout"
    assert waited < 4  # the 0.5 s timeout, not the service's 5 s


async def test_after_enough_failures_the_breaker_answers_503_without_calling(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/flaky", echo_a.url, service="svc-flaky")])

    failures = [await gateway.client.get("/api/flaky/pay?status=500") for _ in range(4)]
    started = time.perf_counter()
    refused = await gateway.client.get("/api/flaky/pay?status=500")
    took = time.perf_counter() - started

    assert [r.status_code for r in failures] == [500] * 4  # the service's own answers
    assert refused.status_code == 503
    assert refused.json()["code"] == "circuit_open"
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert echo_a.hits["/flaky/pay"] == 4  # the fifth never left the gateway
    assert took < 1
    # the breaker is per service: the others are still served
    assert (await gateway.client.get("/ready")).status_code == 200


async def test_client_errors_from_a_service_do_not_trip_its_breaker(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/flaky", echo_a.url, service="svc-flaky")])

    answers = [await gateway.client.get("/api/flaky/missing?status=404") for _ in range(6)]

    assert [r.status_code for r in answers] == [404] * 6
    assert echo_a.hits["/flaky/missing"] == 6


async def test_an_upload_cut_off_during_a_trial_call_does_not_wedge_the_breaker(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    """A half-open breaker lets one trial call through; a call that ends without a verdict
    on the service (here: the client's body was too large) must give the slot back."""
    gateway = await start_gateway([route("/api/trial", echo_a.url, service="svc-trial")],
                                  max_request_body_bytes=1000)
    for _ in range(2):
        await gateway.client.get("/api/trial/x?status=503")
    await asyncio.sleep(0.4)  # reset timeout: now half-open

    async def oversized() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 600

    cut_off = await gateway.client.post("/api/trial/upload", content=oversized())
    trial = await gateway.client.get("/api/trial/ok")

    assert cut_off.status_code == 413
    assert trial.status_code == 200
