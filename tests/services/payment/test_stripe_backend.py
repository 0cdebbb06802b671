"""The payment service with the Stripe backend, against stripe-mock: the whole route runs
with requests Stripe's spec accepts, each mutating one with an idempotency key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from services.payment.providers.stripe import StripeGateway
from tests.services.payment.conftest import Service, start_service
from tests.services.payment.test_gateway import RecordingHTTPClient

if TYPE_CHECKING:
    from kommerce.testbed.redis import RedisServer
    from kommerce.testbed.stripe_mock import StripeMock

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.stripe]


@pytest.fixture(scope="module")
def recorder() -> RecordingHTTPClient:
    return RecordingHTTPClient()


@pytest.fixture(scope="module")
async def stripe_service(payment_database_url: str, redis_server: RedisServer,
                         stripe_mock: StripeMock,
                         recorder: RecordingHTTPClient) -> AsyncIterator[Service]:
    gateway = StripeGateway("sk_test_123", api_base=stripe_mock.api_base,
                            max_network_retries=0, http_client=recorder)
    async for started in start_service(payment_database_url, redis_server.url, gateway,
                                       payment_backend="stripe"):
        yield started


async def test_a_charge_through_the_api_sends_one_keyed_stripe_request(
        stripe_service: Service, recorder: RecordingHTTPClient) -> None:
    body = {"order_id": "ord-stripe-1", "amount": 1999, "currency": "usd",
            "payment_method": "pm_card_visa", "owner": "dora"}
    headers = {**stripe_service.auth("service:order", "service"),
               "Idempotency-Key": "checkout-1"}
    first = await stripe_service.client.post("/payments", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["id"]
    posts = [h for method, url, h, _ in recorder.sent
             if method == "post" and url.endswith("/v1/payment_intents")]
    assert len(posts) == 1
    assert posts[0]["Idempotency-Key"] == f"charge-{first.json()['id']}"
