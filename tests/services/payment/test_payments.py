"""The payment service end to end on PostgreSQL with the sandbox gateway: charges once per
Idempotency-Key (even concurrently), declines and 3-D Secure surfaced, refunds bounded by
the charge, signed webhooks only, an audit log nobody can rewrite, and no card number
anywhere in the database."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from services.core.events.tables import outbox
from services.payment.models import AuditEntry, Payment, WebhookEvent
from services.payment.providers.sandbox import SandboxGateway
from tests.services.payment.conftest import WEBHOOK_SECRET, Service, start_service
from tests.services.support import unique

if TYPE_CHECKING:
    from kommerce.testbed.redis import RedisServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def charge_body(method: str = "pm_card_visa", amount: int = 2599,
                order_id: str | None = None, owner: str | None = None) -> dict[str, Any]:
    """A charge as the order saga asks for it, for ``owner`` (a new shopper by default)."""
    return {"order_id": order_id or unique("ord"), "amount": amount, "currency": "usd",
            "payment_method": method, "owner": owner or unique("shopper")}


async def charge(service: Service, headers: dict[str, str], body: dict[str, Any],
                 key: str | None = None) -> Any:
    return await service.client.post("/payments", json=body,
                                     headers={**headers, "Idempotency-Key": key or unique("k")})


async def count(service: Service, query: Any) -> int:
    async with service.database.session() as session:
        return int((await session.execute(query)).scalar_one())


async def test_visa_charge_succeeds_and_keeps_only_brand_and_last4(service: Service) -> None:
    response = await charge(service, service.saga(), charge_body())
    assert response.status_code == 201, response.text
    payment = response.json()
    assert payment["status"] == "succeeded"
    assert (payment["card_brand"], payment["card_last4"]) == ("visa", "4242")
    assert payment["client_secret"] is None and not payment["needs_review"]


async def test_same_key_twice_returns_the_first_payment(service: Service) -> None:
    headers, body = service.saga(), charge_body()
    first = await charge(service, headers, body, key="same-key")
    again = await charge(service, headers, body, key="same-key")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]


async def test_same_key_concurrently_makes_one_payment(service: Service) -> None:
    headers, body = service.saga(), charge_body()
    responses = await asyncio.gather(*(charge(service, headers, body, key="race")
                                       for _ in range(8)))
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count(service, select(func.count()).select_from(Payment)
                       .where(Payment.order_id == body["order_id"])) == 1
    charged = select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "charge_succeeded",
        AuditEntry.payment_id == uuid.UUID(responses[0].json()["id"]))
    assert await count(service, charged) == 1


async def test_a_charge_after_a_restart_gets_a_new_intent_and_succeeds(
        payment_database_url: str, redis_server: RedisServer) -> None:
    """The sandbox forgets its intents on a restart; the payments table does not, and its
    ``intent_id`` is unique — so the restarted sandbox must not reuse an id."""
    schema = unique("payment")
    intents: list[str | None] = []
    for _ in range(2):  # the first run, then a restart on the same database
        async for service in start_service(payment_database_url, redis_server.url,
                                           SandboxGateway(), database_schema=schema):
            response = await charge(service, service.saga(), charge_body())
            assert response.status_code == 201, response.text
            assert response.json()["status"] == "succeeded"
            async with service.database.session() as session:
                intents = list((await session.execute(
                    select(Payment.intent_id).order_by(Payment.created_at))).scalars())
    assert len(intents) == 2 and len(set(intents)) == 2, intents


async def test_same_key_for_a_different_payment_is_refused(service: Service) -> None:
    headers, order_id = service.saga(), unique("ord")
    await charge(service, headers, charge_body(amount=100, order_id=order_id), key="reused")
    response = await charge(service, headers, charge_body(amount=200, order_id=order_id),
                            key="reused")
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(("method", "code"), [
    ("pm_card_chargeDeclined", "generic_decline"),
    ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
])
async def test_declined_card_is_recorded_and_announced(service: Service, method: str,
                                                       code: str) -> None:
    body = charge_body(method)
    response = await charge(service, service.saga(), body)
    assert response.status_code == 201
    payment = response.json()
    assert payment["status"] == "declined" and payment["decline_code"] == code
    assert payment["failure_message"]
    events = select(func.count()).select_from(outbox).where(
        outbox.c.event_type == "payment.failed", outbox.c.event_key == body["order_id"])
    assert await count(service, events) == 1


async def test_requires_action_hands_back_the_client_secret(service: Service) -> None:
    response = await charge(service, service.saga(),
                            charge_body("pm_card_authenticationRequired"))
    payment = response.json()
    assert payment["status"] == "requires_action" and payment["client_secret"]


async def test_elevated_risk_sends_the_payment_to_review(service: Service) -> None:
    response = await charge(service, service.saga(), charge_body("pm_card_riskLevelElevated"))
    payment = response.json()
    assert payment["status"] == "succeeded" and payment["needs_review"]
    assert payment["risk_level"] == "elevated"


@pytest.mark.parametrize("method", ["4242424242424242", "pm_4242424242424242",
                                    "pm_card_4242424242424242"])
async def test_a_card_number_is_refused_and_stored_nowhere(service: Service,
                                                          method: str) -> None:
    """Raw, or dressed up as a payment method id: either way it never gets in."""
    pan = "4242424242424242"
    response = await charge(service, service.saga(), charge_body(method))
    assert response.status_code == 422
    async with service.database.session() as session:
        for table in ("payments", "refunds", "payment_audit_log", "outbox"):
            dump = (await session.execute(text(
                f"SELECT coalesce(string_agg(t::text, ''), '') FROM {table} t"))).scalar_one()
            assert pan not in dump, table


async def test_shoppers_see_only_their_own_payments(service: Service) -> None:
    owner = service.auth("ann")
    payment = (await charge(service, service.saga(), charge_body(owner="ann"))).json()
    assert (await service.client.get(f"/payments/{payment['id']}",
                                     headers=owner)).status_code == 200
    other = await service.client.get(f"/payments/{payment['id']}", headers=service.auth("bob"))
    assert other.status_code == 404


async def refund(service: Service, payment_id: str, headers: dict[str, str],
                 amount: int | None = None, key: str | None = None) -> Any:
    body = {} if amount is None else {"amount": amount}
    return await service.client.post(f"/payments/{payment_id}/refunds", json=body, headers={
        **headers, "Idempotency-Key": key or unique("r")})


async def test_partial_then_full_refund_never_exceeds_the_charge(service: Service) -> None:
    payment = (await charge(service, service.saga(), charge_body(amount=1000))).json()
    saga = service.auth("order-service", "service")
    partial = await refund(service, payment["id"], saga, amount=300, key="r1")
    assert partial.status_code == 201 and partial.json()["amount"] == 300
    assert (await refund(service, payment["id"], saga, amount=300, key="r1")).status_code == 200
    too_much = await refund(service, payment["id"], saga, amount=701)
    assert too_much.status_code == 422 and too_much.json()["code"] == "refund_too_large"
    rest = await refund(service, payment["id"], saga)
    assert rest.json()["amount"] == 700
    after = (await service.client.get(f"/payments/{payment['id']}", headers=saga)).json()
    assert (after["status"], after["refunded_amount"]) == ("refunded", 1000)


async def test_concurrent_refunds_never_exceed_the_charge(service: Service) -> None:
    payment = (await charge(service, service.saga(), charge_body(amount=1000))).json()
    admin = service.auth("root", "admin")
    results = await asyncio.gather(*(refund(service, payment["id"], admin, amount=400)
                                     for _ in range(4)))
    assert sorted(r.status_code for r in results) == [201, 201, 422, 422]


async def test_a_shopper_cannot_refund(service: Service) -> None:
    owner = service.auth("carl")
    payment = (await charge(service, service.saga(), charge_body(owner="carl"))).json()
    assert (await refund(service, payment["id"], owner)).status_code == 403


async def test_a_declined_payment_cannot_be_refunded(service: Service) -> None:
    payment = (await charge(service, service.saga(),
                            charge_body("pm_card_chargeDeclined"))).json()
    response = await refund(service, payment["id"], service.auth("root", "admin"))
    assert response.status_code == 422


async def test_the_audit_log_records_each_action_and_cannot_be_rewritten(
        service: Service) -> None:
    payment = (await charge(service, service.saga(), charge_body())).json()
    admin = service.auth("root", "admin")
    await refund(service, payment["id"], admin, amount=100)
    trail = (await service.client.get(f"/payments/{payment['id']}/audit",
                                      headers=admin)).json()
    assert [e["action"] for e in trail] == ["charge_requested", "charge_succeeded", "refund"]
    for statement in ("UPDATE payment_audit_log SET actor = 'mallory'",
                      "DELETE FROM payment_audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with service.database.session() as session, session.begin():
                await session.execute(text(statement))
    shopper = await service.client.get(f"/payments/{payment['id']}/audit",
                                       headers=service.auth())
    assert shopper.status_code == 403


# -- webhooks --------------------------------------------------------------------------------


def signed(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    timestamp = at or int(time.time())
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload,
                      hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def stripe_event(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"id": unique("evt"), "object": "event", "type": event_type,
                       "data": {"object": obj}}).encode()


async def payment_row(service: Service, payment_id: str) -> Payment:
    async with service.database.session() as session:
        row = await session.get(Payment, uuid.UUID(payment_id))
        assert row is not None
        return row


async def test_webhook_with_a_bad_signature_is_refused_and_changes_nothing(
        service: Service) -> None:
    payment = (await charge(service, service.saga(),
                            charge_body("pm_card_authenticationRequired"))).json()
    intent_id = (await payment_row(service, payment["id"])).intent_id
    payload = stripe_event("payment_intent.succeeded", {"id": intent_id})
    before = await count(service, select(func.count()).select_from(WebhookEvent))
    for signature in (signed(payload, "whsec_someone_else"), "garbage", None,
                      signed(payload, at=int(time.time()) - 3600)):
        headers = {"Stripe-Signature": signature} if signature else {}
        response = await service.client.post("/webhooks/stripe", content=payload,
                                             headers=headers)
        assert response.status_code == 400, response.text
    assert (await payment_row(service, payment["id"])).status == "requires_action"
    assert await count(service, select(func.count()).select_from(WebhookEvent)) == before


async def test_signed_webhook_applies_once(service: Service) -> None:
    payment = (await charge(service, service.saga(),
                            charge_body("pm_card_authenticationRequired"))).json()
    intent_id = (await payment_row(service, payment["id"])).intent_id
    payload = stripe_event("payment_intent.succeeded", {"id": intent_id})
    first = await service.client.post("/webhooks/stripe", content=payload,
                                      headers={"Stripe-Signature": signed(payload)})
    again = await service.client.post("/webhooks/stripe", content=payload,
                                      headers={"Stripe-Signature": signed(payload)})
    assert (first.json(), again.json()) == ({"outcome": "applied"}, {"outcome": "duplicate"})
    assert (await payment_row(service, payment["id"])).status == "succeeded"
    announced = select(func.count()).select_from(outbox).where(
        outbox.c.event_type == "payment.succeeded", outbox.c.event_key == payment["order_id"])
    assert await count(service, announced) == 1


async def test_webhook_never_moves_a_succeeded_payment_back(service: Service) -> None:
    payment = (await charge(service, service.saga(), charge_body())).json()
    intent_id = (await payment_row(service, payment["id"])).intent_id
    payload = stripe_event("payment_intent.payment_failed",
                           {"id": intent_id, "last_payment_error": {"code": "card_declined"}})
    response = await service.client.post("/webhooks/stripe", content=payload,
                                         headers={"Stripe-Signature": signed(payload)})
    assert response.status_code == 200
    assert (await payment_row(service, payment["id"])).status == "succeeded"


async def test_charge_refunded_webhook_updates_the_refunded_amount(service: Service) -> None:
    payment = (await charge(service, service.saga(), charge_body(amount=1000))).json()
    intent_id = (await payment_row(service, payment["id"])).intent_id
    payload = stripe_event("charge.refunded", {"id": "ch_1", "payment_intent": intent_id,
                                               "amount_refunded": 250})
    await service.client.post("/webhooks/stripe", content=payload,
                              headers={"Stripe-Signature": signed(payload)})
    row = await payment_row(service, payment["id"])
    assert (row.status, row.refunded_amount) == ("partially_refunded", 250)


@pytest.mark.parametrize("payload", [b'{"hello": "world"}', b"[]", b"not json", b'"x"',
                                     b'{"id": "evt_1", "type": "x", "data": []}'])
async def test_signed_body_that_is_no_event_is_a_client_error(service: Service,
                                                              payload: bytes) -> None:
    response = await service.client.post("/webhooks/stripe", content=payload,
                                         headers={"Stripe-Signature": signed(payload)})
    assert response.status_code == 400


async def test_payments_by_order_are_all_for_services_and_their_own_for_a_shopper(
        service: Service) -> None:
    body = charge_body(owner="ivan")
    await charge(service, service.saga(), body)
    listed = await service.client.get("/payments", params={"order_id": body["order_id"]},
                                      headers=service.auth("order-service", "service"))
    assert [p["order_id"] for p in listed.json()] == [body["order_id"]]
    own = await service.client.get("/payments", params={"order_id": body["order_id"]},
                                   headers=service.auth("ivan"))
    assert [p["owner"] for p in own.json()] == ["ivan"]
    stranger = await service.client.get("/payments", params={"order_id": body["order_id"]},
                                        headers=service.auth())
    assert stranger.status_code == 200 and stranger.json() == []


# -- payments belong to the saga -------------------------------------------------------------


async def test_a_shopper_cannot_charge_not_even_for_themselves(service: Service) -> None:
    body = charge_body(owner="jill")
    response = await charge(service, service.auth("jill"), body)
    assert response.status_code == 403 and response.json()["code"] == "missing_role"
    assert await count(service, select(func.count()).select_from(Payment)
                       .where(Payment.order_id == body["order_id"])) == 0


async def test_an_admin_cannot_charge_either(service: Service) -> None:
    response = await charge(service, service.auth("root", "admin"), charge_body())
    assert response.status_code == 403


async def test_an_order_is_charged_once_whatever_the_key(service: Service) -> None:
    body = charge_body()
    first = await charge(service, service.saga(), body, key="first")
    assert first.json()["status"] == "succeeded"
    for other in ({**body, "amount": 1}, {**body, "currency": "jpy"}, body):
        second = await charge(service, service.saga(), other)
        assert second.status_code == 409, second.text
        assert second.json()["code"] == "order_already_charged"
    again = await charge(service, service.saga(), body, key="first")  # its own retry
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert await count(service, select(func.count()).select_from(Payment)
                       .where(Payment.order_id == body["order_id"])) == 1


async def test_two_first_charges_under_two_keys_make_one_payment(service: Service) -> None:
    body = charge_body()
    answers = await asyncio.gather(*(charge(service, service.saga(), body, key=f"race-{n}")
                                     for n in range(4)))
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409]
    assert await count(service, select(func.count()).select_from(Payment)
                       .where(Payment.order_id == body["order_id"])) == 1


async def test_a_declined_charge_leaves_the_order_chargeable(service: Service) -> None:
    order_id = unique("ord")
    declined = await charge(service, service.saga(),
                            charge_body("pm_card_chargeDeclined", order_id=order_id))
    assert declined.json()["status"] == "declined"
    paid = await charge(service, service.saga(), charge_body(order_id=order_id))
    assert paid.status_code == 201 and paid.json()["status"] == "succeeded"


async def test_a_payment_waiting_for_3d_secure_blocks_a_second_charge(service: Service) -> None:
    body = charge_body("pm_card_threeDSecure2Required")
    waiting = await charge(service, service.saga(), body)
    assert waiting.json()["status"] == "requires_action"
    second = await charge(service, service.saga(), {**body, "amount": 1,
                                                     "payment_method": "pm_card_visa"})
    assert second.status_code == 409


async def authenticate(service: Service, payment_id: str, headers: dict[str, str]) -> Any:
    return await service.client.post(f"/payments/{payment_id}/authentication",
                                     headers=headers)


async def test_the_shopper_completes_3d_secure_and_the_success_is_announced(
        service: Service) -> None:
    body = charge_body("pm_card_threeDSecure2Required", owner="kim")
    payment = (await charge(service, service.saga(), body)).json()
    assert payment["status"] == "requires_action" and payment["intent_id"]
    done = await authenticate(service, payment["id"], service.auth("kim"))
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["intent_id"]) == ("succeeded",
                                                                  payment["intent_id"])
    async with service.database.session() as session:
        [envelope] = (await session.execute(select(outbox.c.envelope).where(
            outbox.c.event_type == "payment.succeeded",
            outbox.c.event_key == body["order_id"]))).scalars().all()
    event = envelope["payload"]
    assert {k: event[k] for k in ("payment_id", "intent_id", "order_id", "amount",
                                  "currency", "owner")} == {
        "payment_id": payment["id"], "intent_id": payment["intent_id"],
        "order_id": body["order_id"], "amount": body["amount"], "currency": "usd",
        "owner": "kim"}
    again = await authenticate(service, payment["id"], service.auth("kim"))
    assert (again.status_code, again.json()["status"]) == (200, "succeeded")


async def test_only_the_payments_shopper_is_shown_its_client_secret(service: Service) -> None:
    """The shopper needs it for Stripe.js; nobody else sees it, and it goes with success."""
    body = charge_body("pm_card_threeDSecure2Required", owner="oz")
    made = (await charge(service, service.saga(), body)).json()
    assert made["client_secret"]
    params = {"order_id": body["order_id"]}
    [own] = (await service.client.get("/payments", params=params,
                                      headers=service.auth("oz"))).json()
    read = (await service.client.get(f"/payments/{made['id']}",
                                     headers=service.auth("oz"))).json()
    assert own["client_secret"] == read["client_secret"] == made["client_secret"]
    for other in (service.saga(), service.auth("root", "admin")):
        [listed] = (await service.client.get("/payments", params=params,
                                             headers=other)).json()
        fetched = (await service.client.get(f"/payments/{made['id']}", headers=other)).json()
        assert listed["client_secret"] is None and fetched["client_secret"] is None
    await authenticate(service, made["id"], service.auth("oz"))
    after = (await service.client.get(f"/payments/{made['id']}",
                                      headers=service.auth("oz"))).json()
    assert (after["status"], after["client_secret"]) == ("succeeded", None)
    async with service.database.session() as session:
        stored = await session.get(Payment, uuid.UUID(made["id"]))
        assert stored is not None and stored.client_secret is None


async def test_only_the_payments_shopper_completes_its_3d_secure(service: Service) -> None:
    payment = (await charge(service, service.saga(),
                            charge_body("pm_card_threeDSecure2Required", owner="lou"))).json()
    for stranger in (service.auth("mia"), service.auth("root", "admin"), service.saga()):
        response = await authenticate(service, payment["id"], stranger)
        assert response.status_code == 404, response.text
    fetched = await service.client.get(f"/payments/{payment['id']}", headers=service.saga())
    assert fetched.json()["status"] == "requires_action"


async def test_a_declined_payment_has_no_3d_secure_to_complete(service: Service) -> None:
    payment = (await charge(service, service.saga(),
                            charge_body("pm_card_chargeDeclined", owner="ned"))).json()
    response = await authenticate(service, payment["id"], service.auth("ned"))
    assert response.status_code == 409
    assert response.json()["code"] == "payment_not_awaiting_authentication"


# -- saved payment methods -------------------------------------------------------------------


async def test_a_saved_card_is_listed_by_brand_and_last4_and_can_be_charged(
        service: Service) -> None:
    owner = service.auth("erin")
    saved = await service.client.post("/payment-methods", headers=owner,
                                      json={"payment_method": "pm_card_mastercard"})
    assert saved.status_code == 201, saved.text
    method = saved.json()
    assert (method["brand"], method["last4"]) == ("mastercard", "4444")
    listed = (await service.client.get("/payment-methods", headers=owner)).json()
    assert [m["id"] for m in listed] == [method["id"]]
    assert (await service.client.get("/payment-methods",
                                     headers=service.auth("frank"))).json() == []
    paid = (await charge(service, service.saga(),
                         charge_body(method["id"], owner="erin"))).json()
    assert (paid["status"], paid["card_last4"]) == ("succeeded", "4444")


async def test_a_saved_card_is_removed_only_by_its_owner(service: Service) -> None:
    owner = service.auth("gail")
    method = (await service.client.post("/payment-methods", headers=owner,
                                        json={"payment_method": "pm_card_visa"})).json()
    stranger = await service.client.delete(f"/payment-methods/{method['id']}",
                                           headers=service.auth("hank"))
    assert stranger.status_code == 404
    removed = await service.client.delete(f"/payment-methods/{method['id']}", headers=owner)
    assert removed.status_code == 204
    assert (await service.client.get("/payment-methods", headers=owner)).json() == []
