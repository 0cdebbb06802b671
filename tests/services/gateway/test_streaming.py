"""Bodies stream through the gateway both ways instead of being buffered."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.services.support import unique

from .conftest import Echo, StartGateway, pattern_sha256, route

pytestmark = pytest.mark.redis

MIB = 1024 * 1024


async def test_a_large_response_arrives_whole(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/files", echo_a.url)])
    size = 48 * MIB

    digest, received = hashlib.sha256(), 0
    async with gateway.client.stream("GET", f"/api/files/big?stream={size}") as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            digest.update(chunk)
            received += len(chunk)

    assert received == size
    assert digest.hexdigest() == pattern_sha256(size)


async def test_the_first_bytes_arrive_before_the_service_has_finished(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    """The service holds back everything after its first chunk until the client has that
    chunk: a buffering gateway could never deliver it, and the test would time out."""
    gateway = await start_gateway([route("/api/files", echo_a.url)])
    hold = unique("hold")

    async with asyncio.timeout(20), gateway.client.stream(
            "GET", f"/api/files/held?stream=200000&chunk=1000&hold={hold}") as response:
        chunks = response.aiter_raw()
        first = await anext(chunks)
        echo_a.release(hold)
        rest = b"".join([chunk async for chunk in chunks])

    assert len(first) + len(rest) == 200_000


async def test_a_response_the_service_breaks_off_reaches_the_client_as_broken(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    """Once headers are sent the status cannot change; the gateway drops the connection so
    the client sees a truncated body instead of a short one that looks complete."""
    gateway = await start_gateway([route("/api/files", echo_a.url)])

    with pytest.raises(httpx.RemoteProtocolError):
        async with gateway.client.stream(
                "GET", "/api/files/broken?stream=1000000&chunk=1000&break=1") as response:
            async for _ in response.aiter_raw():
                pass

    assert (await gateway.client.get("/api/files/after")).status_code == 200


async def test_a_large_upload_is_streamed_to_the_service(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/uploads", echo_a.url)])
    piece = bytes(range(256)) * 4096  # 1 MiB
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):  # under the default 10 MiB limit
            sent.update(piece)
            yield piece

    response = await gateway.client.post("/api/uploads/file", content=body())

    assert response.status_code == 200
    assert response.json()["body_length"] == 8 * MIB
    assert response.json()["body_sha256"] == sent.hexdigest()


async def test_a_body_over_the_limit_is_413(
        start_gateway: StartGateway, echo_a: Echo) -> None:
    gateway = await start_gateway([route("/api/uploads", echo_a.url)],
                                  max_request_body_bytes=MIB)

    declared = await gateway.client.post("/api/uploads/declared", content=b"x" * (MIB + 1))

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * (MIB // 2)

    streamed = await gateway.client.post("/api/uploads/streamed", content=chunked())
    within = await gateway.client.post("/api/uploads/small", content=b"z" * MIB)

    assert declared.status_code == 413
    assert declared.json()["code"] == "payload_too_large"
    assert echo_a.hits["/uploads/declared"] == 0
    assert streamed.status_code == 413
    assert within.status_code == 200
    # the gateway is still fine with the service afterwards
    assert (await gateway.client.post("/api/uploads/small", content=b"ok")).status_code == 200
