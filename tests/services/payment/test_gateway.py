"""The payment gateways: the Stripe one's requests are valid Stripe API calls (stripe-mock
checks each against Stripe's spec) and carry an idempotency key; declines come back as
values, from a server answering as Stripe does and from the local sandbox."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import stripe

from kommerce.testbed.stripe_mock import StripeMock
from services.core.errors import DomainError, InvalidRequest, Unprocessable
from services.payment.providers import ChargeStatus, GatewayError
from services.payment.providers.sandbox import TEST_CARDS, SandboxGateway
from services.payment.providers.stripe import StripeGateway


class RecordingHTTPClient(stripe.AIOHTTPClient):
    """The transport the gateway uses, remembering what it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, dict[str, str], str]] = []

    async def request_async(self, method: str, url: str, headers: Mapping[str, str],
                            post_data: Any = None) -> tuple[bytes, int, Mapping[str, str]]:
        body = post_data.decode() if isinstance(post_data, bytes) else str(post_data or "")
        self.sent.append((method, url, dict(headers), body))
        return await super().request_async(method, url, headers, post_data)


@pytest.fixture
def recorder() -> RecordingHTTPClient:
    return RecordingHTTPClient()


def stripe_gateway(api_base: str, http_client: stripe.HTTPClient | None = None
                   ) -> StripeGateway:
    return StripeGateway("sk_test_123", api_base=api_base, max_network_retries=0,
                         http_client=http_client)


# -- against stripe-mock ---------------------------------------------------------------------


@pytest.mark.stripe
async def test_every_mutating_stripe_call_is_valid_and_carries_its_idempotency_key(
        stripe_mock: StripeMock, recorder: RecordingHTTPClient) -> None:
    gateway = stripe_gateway(stripe_mock.api_base, recorder)
    customer = await gateway.create_customer(email="ann@example.com", idempotency_key="k-cus")
    charge = await gateway.charge(amount=2599, currency="usd", payment_method="pm_card_visa",
                                  idempotency_key="k-charge", customer=customer,
                                  metadata={"order_id": "ord-1"})
    assert charge.intent_id and charge.intent_id.startswith("pi_")
    assert charge.amount == 2599 and charge.currency == "usd"
    refund = await gateway.refund(intent_id=charge.intent_id, amount=500,
                                  idempotency_key="k-refund")
    assert refund.refund_id.startswith("re_")
    await gateway.refund(intent_id=charge.intent_id, amount=None, idempotency_key="k-full")
    await gateway.cancel(intent_id=charge.intent_id, idempotency_key="k-cancel")
    card = await gateway.attach(customer=customer, payment_method="pm_card_visa",
                                idempotency_key="k-attach")
    assert card.id.startswith("pm_")
    await gateway.detach(payment_method=card.id, idempotency_key="k-detach")

    posts = [(url, headers, body) for method, url, headers, body in recorder.sent
             if method == "post"]
    keys = [headers.get("Idempotency-Key") for _, headers, _ in posts]
    assert keys == ["k-cus", "k-charge", "k-refund", "k-full", "k-cancel", "k-attach",
                    "k-detach"]
    charge_body = posts[1][2]
    assert "payment_method=pm_card_visa" in charge_body and "confirm=true" in charge_body
    assert "amount=500" in posts[2][2] and "amount" not in posts[3][2]


@pytest.mark.stripe
async def test_completing_3d_secure_with_stripe_reads_the_intent_and_changes_nothing(
        stripe_mock: StripeMock, recorder: RecordingHTTPClient) -> None:
    """The challenge happened in the browser; the gateway only asks Stripe how it ended."""
    gateway = stripe_gateway(stripe_mock.api_base, recorder)
    charge = await gateway.charge(amount=2599, currency="usd", payment_method="pm_card_visa",
                                  idempotency_key="k-charge")
    assert charge.intent_id
    read = await gateway.complete_action(intent_id=charge.intent_id, idempotency_key="k-3ds")
    assert read.intent_id and read.status in set(ChargeStatus)
    method, url, _, _ = recorder.sent[-1]
    assert (method, url.split("?")[0].endswith(f"/v1/payment_intents/{charge.intent_id}")) == (
        "get", True)


async def test_card_numbers_never_reach_stripe(recorder: RecordingHTTPClient) -> None:
    gateway = stripe_gateway("http://127.0.0.1:9", recorder)
    with pytest.raises(InvalidRequest) as raised:
        await gateway.charge(amount=100, currency="usd", payment_method="4242424242424242",
                             idempotency_key="k")
    assert "4242424242424242" not in raised.value.message
    assert recorder.sent == []


async def test_unreachable_stripe_is_unavailable_not_an_internal_error() -> None:
    gateway = stripe_gateway("http://127.0.0.1:9")
    with pytest.raises(GatewayError) as raised:
        await gateway.charge(amount=100, currency="usd", payment_method="pm_card_visa",
                             idempotency_key="k")
    assert raised.value.status_code == 503


# -- a server that declines as Stripe does ---------------------------------------------------

DECLINE = {"error": {
    "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
    "message": "Your card has insufficient funds.",
    "payment_intent": {"id": "pi_declined", "object": "payment_intent", "amount": 700,
                       "currency": "usd", "status": "requires_payment_method",
                       "latest_charge": {"id": "ch_1", "object": "charge",
                                         "outcome": {"risk_level": "normal"}}},
    "payment_method": {"id": "pm_x", "object": "payment_method",
                       "card": {"brand": "visa", "last4": "9995"}},
}}

MISSING = {"error": {"type": "invalid_request_error", "code": "resource_missing",
                     "message": "No such payment_intent: 'pi_missing'",
                     "param": "payment_intent"}}

REQUIRES_ACTION = {"id": "pi_3ds", "object": "payment_intent", "amount": 900,
                   "currency": "eur", "status": "requires_action",
                   "client_secret": "pi_3ds_secret_abc",
                   "payment_method": {"id": "pm_y", "object": "payment_method",
                                      "card": {"brand": "mastercard", "last4": "3184"}}}


@pytest.fixture(scope="module")
def declining_stripe() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            status, answer = ((200, REQUIRES_ACTION) if "pm_card_authenticationRequired"
                              in body else (402, DECLINE))
            if "/refunds" in self.path:
                status, answer = 400, MISSING
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_stripe_invalid_request_is_a_client_error_not_a_500(
        declining_stripe: str) -> None:
    with pytest.raises(Unprocessable) as raised:
        await stripe_gateway(declining_stripe).refund(intent_id="pi_missing", amount=None,
                                                      idempotency_key="k-missing")
    assert raised.value.code == "resource_missing"


async def test_stripe_decline_is_a_result_with_reason_and_last4(declining_stripe: str) -> None:
    result = await stripe_gateway(declining_stripe).charge(
        amount=700, currency="usd", payment_method="pm_card_chargeDeclinedInsufficientFunds",
        idempotency_key="k-decline")
    assert result.status is ChargeStatus.DECLINED
    assert result.intent_id == "pi_declined"
    assert result.decline_code == "insufficient_funds"
    assert result.failure_message == "Your card has insufficient funds."
    assert (result.card_brand, result.card_last4) == ("visa", "9995")


async def test_stripe_requires_action_surfaces_the_client_secret(declining_stripe: str) -> None:
    result = await stripe_gateway(declining_stripe).charge(
        amount=900, currency="eur", payment_method="pm_card_authenticationRequired",
        idempotency_key="k-3ds")
    assert result.status is ChargeStatus.REQUIRES_ACTION
    assert result.client_secret == "pi_3ds_secret_abc"
    assert (result.card_brand, result.card_last4) == ("mastercard", "3184")


# -- the sandbox -----------------------------------------------------------------------------


async def test_sandbox_visa_succeeds_with_brand_and_last4_only() -> None:
    result = await SandboxGateway().charge(amount=1000, currency="usd",
                                           payment_method="pm_card_visa", idempotency_key="k")
    assert result.status is ChargeStatus.SUCCEEDED
    assert (result.card_brand, result.card_last4, result.risk_level) == ("visa", "4242",
                                                                         "normal")


@pytest.mark.parametrize(("method", "code"), [
    ("pm_card_chargeDeclined", "generic_decline"),
    ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ("pm_card_chargeDeclinedFraudulent", "fraudulent"),
])
async def test_sandbox_declines_as_stripe_test_cards_do(method: str, code: str) -> None:
    result = await SandboxGateway().charge(amount=1000, currency="usd",
                                           payment_method=method, idempotency_key="k")
    assert result.status is ChargeStatus.DECLINED
    assert result.decline_code == code and result.failure_message
    assert result.card_last4 == TEST_CARDS[method].last4


async def test_sandbox_same_key_repeats_the_first_charge_and_refuses_other_params() -> None:
    sandbox = SandboxGateway()
    first = await sandbox.charge(amount=1000, currency="usd", payment_method="pm_card_visa",
                                 idempotency_key="same")
    again = await sandbox.charge(amount=1000, currency="usd", payment_method="pm_card_visa",
                                 idempotency_key="same")
    assert again == first
    with pytest.raises(Unprocessable):
        await sandbox.charge(amount=2000, currency="usd", payment_method="pm_card_visa",
                             idempotency_key="same")


async def test_sandbox_partial_then_full_refund_never_exceeds_the_charge() -> None:
    sandbox = SandboxGateway()
    charge = await sandbox.charge(amount=1000, currency="usd", payment_method="pm_card_visa",
                                  idempotency_key="c")
    assert charge.intent_id
    partial = await sandbox.refund(intent_id=charge.intent_id, amount=300,
                                   idempotency_key="r1")
    rest = await sandbox.refund(intent_id=charge.intent_id, amount=None, idempotency_key="r2")
    assert (partial.amount, rest.amount) == (300, 700)
    assert await sandbox.refund(intent_id=charge.intent_id, amount=None,
                                idempotency_key="r2") == rest
    with pytest.raises(Unprocessable):
        await sandbox.refund(intent_id=charge.intent_id, amount=1, idempotency_key="r3")


async def test_sandbox_requires_action_can_be_canceled() -> None:
    sandbox = SandboxGateway()
    charge = await sandbox.charge(amount=1000, currency="usd",
                                  payment_method="pm_card_authenticationRequired",
                                  idempotency_key="c")
    assert charge.status is ChargeStatus.REQUIRES_ACTION and charge.client_secret
    assert charge.intent_id
    canceled = await sandbox.cancel(intent_id=charge.intent_id, idempotency_key="x")
    assert canceled.status is ChargeStatus.CANCELED
    with pytest.raises(Unprocessable):
        await sandbox.refund(intent_id=charge.intent_id, amount=None, idempotency_key="r")


async def test_sandbox_3d_secure_completes_once_and_is_remembered(tmp_path: Path) -> None:
    """The shopper passes the challenge: the waiting intent succeeds, can be refunded, and
    a restarted sandbox (state file) still knows it succeeded."""
    state = tmp_path / "sandbox.jsonl"
    sandbox = SandboxGateway(state_path=state)
    charge = await sandbox.charge(amount=1000, currency="eur",
                                  payment_method="pm_card_threeDSecure2Required",
                                  idempotency_key="c")
    assert charge.status is ChargeStatus.REQUIRES_ACTION and charge.intent_id
    done = await sandbox.complete_action(intent_id=charge.intent_id, idempotency_key="a")
    assert (done.status, done.intent_id, done.amount, done.currency, done.client_secret) == (
        ChargeStatus.SUCCEEDED, charge.intent_id, 1000, "eur", None)
    after = SandboxGateway(state_path=state)
    assert await after.complete_action(intent_id=charge.intent_id,
                                       idempotency_key="b") == done
    refund = await after.refund(intent_id=charge.intent_id, amount=None, idempotency_key="r")
    assert refund.amount == 1000
    with pytest.raises(Unprocessable):
        await sandbox.complete_action(intent_id="pi_unknown", idempotency_key="z")


@pytest.mark.parametrize("method", ["4242424242424242", "pm_", "card_visa", "pm_card visa"])
async def test_sandbox_refuses_anything_but_a_payment_method_token(method: str) -> None:
    with pytest.raises(DomainError):
        await SandboxGateway().charge(amount=1000, currency="usd", payment_method=method,
                                      idempotency_key="k")


async def test_sandbox_ids_are_stripe_shaped_and_never_repeat_across_a_restart() -> None:
    """A restarted service has a new sandbox; its ids must not repeat the stored ones."""
    before, after = SandboxGateway(), SandboxGateway()
    ids: list[str] = []
    for n, sandbox in enumerate([before, after] * 100):
        result = await sandbox.charge(amount=1000, currency="usd",
                                      payment_method="pm_card_visa", idempotency_key=f"k{n}")
        assert result.intent_id and re.fullmatch(r"pi_[A-Za-z0-9]{24}", result.intent_id)
        ids.append(result.intent_id)
        refund = await sandbox.refund(intent_id=result.intent_id, amount=None,
                                      idempotency_key=f"r{n}")
        ids.append(refund.refund_id)
        ids.append(await sandbox.create_customer(email=None, idempotency_key=f"c{n}"))
    assert len(set(ids)) == len(ids)


async def test_a_sandbox_with_a_state_file_remembers_charges_across_a_restart(
        tmp_path: Path) -> None:
    """Refunding an order paid before the platform restarted works, as with Stripe; a
    repeated key repeats its first answer; saved methods stay usable."""
    state = tmp_path / "sandbox.jsonl"
    before = SandboxGateway(state_path=state)
    charge = await before.charge(amount=1000, currency="usd", payment_method="pm_card_visa",
                                 idempotency_key="charge-1")
    card = await before.attach(customer="cus_1", payment_method="pm_card_mastercard",
                               idempotency_key="attach-1")
    await before.refund(intent_id=charge.intent_id or "", amount=300,
                        idempotency_key="refund-1")

    after = SandboxGateway(state_path=state)
    assert await after.charge(amount=1000, currency="usd", payment_method="pm_card_visa",
                              idempotency_key="charge-1") == charge
    rest = await after.refund(intent_id=charge.intent_id or "", amount=None,
                              idempotency_key="refund-2")
    assert rest.amount == 700
    with pytest.raises(Unprocessable):  # nothing left to refund, whichever process asks
        await after.refund(intent_id=charge.intent_id or "", amount=1,
                           idempotency_key="refund-3")
    again = await after.charge(amount=500, currency="usd", payment_method=card.id,
                               idempotency_key="charge-2")
    assert (again.status, again.card_last4) == (ChargeStatus.SUCCEEDED, "4444")


async def test_a_sandbox_without_a_state_file_forgets_on_restart() -> None:
    charge = await SandboxGateway().charge(amount=1000, currency="usd",
                                           payment_method="pm_card_visa",
                                           idempotency_key="charge-1")
    with pytest.raises(Unprocessable, match="no such payment intent"):
        await SandboxGateway().refund(intent_id=charge.intent_id or "", amount=None,
                                      idempotency_key="refund-1")
