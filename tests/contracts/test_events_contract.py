"""Events between services: every publisher writes the payload its contract describes,
byte for byte what it always wrote, and every consumer reads it back through the same
model, refusing (with what is wrong) a payload that does not fit."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kommerce.contracts.events.base import EventPayload, InvalidPayload
from kommerce.contracts.events.order import (
    ORDER_STATUS_CHANGED,
    ORDER_TOPIC,
    OrderStatusChanged,
    SagaCommand,
)
from kommerce.contracts.events.payment import PAYMENT_SUCCEEDED, PAYMENT_TOPIC, PaymentEvent
from kommerce.contracts.events.product import (
    CATALOG_EVENTS,
    InventoryHold,
    PriceChanged,
    ProductChanged,
    StockChanged,
)
from kommerce.contracts.events.review import RatingChanged, ReviewEvent
from kommerce.contracts.events.shipping import ShipmentEvent
from kommerce.contracts.events.user import UserRegistered
from services.core.events.consumer import is_poison
from services.order.events import order_status_changed as status_change
from services.product.events import hold_payload, stock_payload
from services.review.purchases import order_update
from services.search.documents import ProductDocument

ORDER, VARIANT, PRODUCT = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def ordered(payload: dict[str, Any]) -> str:
    """The payload as the bus carries it: key order included."""
    return json.dumps(payload)


# -- what publishers write -------------------------------------------------------------------


def test_an_order_status_change_is_written_as_it_always_was() -> None:
    order: Any = SimpleNamespace(id=ORDER, owner="user-1",  # what status_change reads
                                 lines=[{"variant_id": str(VARIANT), "quantity": 2,
                                         "price": 5}])

    event = status_change(order, source="order", status="PAID",
                          previous="INVENTORY_RESERVED", reason=None)

    assert event.type == ORDER_STATUS_CHANGED
    assert ordered(event.payload) == ordered({
        "order_id": str(ORDER), "owner": "user-1", "status": "PAID",
        "previous": "INVENTORY_RESERVED", "reason": None,
        "lines": [{"variant_id": str(VARIANT), "quantity": 2}]})


def test_a_saga_command_is_written_as_it_always_was() -> None:
    wire = SagaCommand(order_id=ORDER, action="charge", attempt=0).wire()
    assert ordered(wire) == ordered({"order_id": str(ORDER), "action": "charge", "attempt": 0})


def test_a_payment_event_is_written_as_it_always_was() -> None:
    payment = str(uuid.uuid4())
    wire = PaymentEvent(payment_id=payment, order_id=str(ORDER), intent_id="pi_1", owner="u",
                        status="succeeded", amount=16699, currency="EUR", refunded_amount=0,
                        decline_code=None, failure_message=None, needs_review=False,
                        card_brand="visa", card_last4="4242").wire()
    assert ordered(wire) == ordered({
        "payment_id": payment, "order_id": str(ORDER), "intent_id": "pi_1", "owner": "u",
        "status": "succeeded", "amount": 16699, "currency": "EUR", "refunded_amount": 0,
        "decline_code": None, "failure_message": None, "needs_review": False,
        "card_brand": "visa", "card_last4": "4242"})


def test_stock_and_holds_are_written_as_they_always_were() -> None:
    row = SimpleNamespace(id=VARIANT, product_id=PRODUCT, sku="S-1", on_hand=7, reserved=2)
    assert ordered(stock_payload(row)) == ordered({
        "variant_id": str(VARIANT), "product_id": str(PRODUCT), "sku": "S-1", "on_hand": 7,
        "reserved": 2, "available": 5})
    line = SimpleNamespace(variant_id=VARIANT, product_id=PRODUCT, sku="S-1", quantity=2)
    hold = uuid.uuid4()
    reserved = hold_payload(hold, [line], owner="u", expires_at="2026-01-01T00:00:00+00:00")
    old_lines = [{"variant_id": str(VARIANT), "product_id": str(PRODUCT), "sku": "S-1",
                  "quantity": 2}]
    assert ordered(reserved) == ordered({"reservation_id": str(hold), "lines": old_lines,
                                         "owner": "u",
                                         "expires_at": "2026-01-01T00:00:00+00:00"})
    released = hold_payload(hold, [line], owner="u", expires_at="x", reason="expired")
    assert list(released) == ["reservation_id", "lines", "owner", "expires_at", "reason"]


def test_the_other_payloads_keep_their_fields_in_their_order() -> None:
    assert list(ShipmentEvent(shipment_id=uuid.uuid4(), order_id="o", status="delivered")
                .wire()) == ["shipment_id", "order_id", "owner", "status", "carrier",
                             "tracking_number", "description"]
    assert list(ReviewEvent(review_id=uuid.uuid4(), product_id=PRODUCT, user_id="u", rating=4,
                            status="approved").wire()) == [
        "review_id", "product_id", "user_id", "rating", "status"]
    assert list(RatingChanged(product_id=PRODUCT, count=2, average=4.5,
                              distribution={"4": 1, "5": 1}).wire()) == [
        "product_id", "count", "average", "distribution"]
    assert list(UserRegistered(user_id="u", email="a@b.c", version=1, registered_at="t")
                .wire()) == ["user_id", "email", "full_name", "phone", "roles", "preferences",
                             "version", "registered_at"]


def test_the_topics_are_the_publishers_names() -> None:
    assert (ORDER_TOPIC, PAYMENT_TOPIC) == ("order.events", "payment.events")
    assert PAYMENT_SUCCEEDED == "payment.succeeded"
    assert CATALOG_EVENTS == ("product.created", "product.updated", "product.deleted",
                              "price.changed", "stock.changed")


# -- what consumers read ---------------------------------------------------------------------


def test_the_review_service_reads_the_order_service_status_change() -> None:
    order: Any = SimpleNamespace(id=ORDER, owner="user-1",
                                 lines=[{"variant_id": str(VARIANT), "quantity": 1}])
    event = status_change(order, source="order", status="PAID",
                          previous="INVENTORY_RESERVED", reason=None)

    update = order_update(event.payload)

    assert (update.order_id, update.owner, update.status) == (ORDER, "user-1", "PAID")
    assert update.variant_ids == (VARIANT,) and update.product_ids == ()


def test_a_product_document_the_product_service_writes_is_indexable() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    product = {"id": str(PRODUCT), "category": "kitchen", "name": "Whisk", "description": "",
               "attributes": {"brand": "Acme", "material": "steel"}, "images": [],
               "variants": [{"id": str(VARIANT), "sku": "W-1", "name": "Whisk",
                             "attributes": {"colour": "red"},
                             "price": {"amount": 999, "currency": "EUR"},
                             "stock": {"on_hand": 3, "reserved": 1, "available": 2}}],
               "version": 3, "created_at": now, "updated_at": now}

    assert ProductChanged.checked(product) is product
    document = ProductDocument.from_product(ProductChanged.parse(product))

    assert (document.brand, document.price_min, document.in_stock) == ("Acme", 999, True)
    assert document.attributes == {"colour": ["red"], "material": ["steel"]}


@pytest.mark.parametrize(("model", "payload", "problem"), [
    (OrderStatusChanged, {"order_id": "not-a-uuid", "owner": "u", "status": "PAID"},
     "not an order status change: order_id: Input should be a valid UUID"),
    (OrderStatusChanged, {"order_id": str(ORDER), "status": "PAID"},
     "not an order status change: owner: Field required"),
    (OrderStatusChanged, {"order_id": str(ORDER), "owner": "u", "status": "PAID",
                          "lines": [{"product_id": "nope"}]},
     "lines.0.product_id: Input should be a valid UUID"),
    (PaymentEvent, {"payment_id": "p", "order_id": "o", "status": "succeeded",
                    "amount": "16699", "currency": "EUR"},
     "not a payment event: amount: Input should be a valid integer"),
    (PaymentEvent, {"payment_id": "p", "order_id": "o", "status": "succeeded",
                    "amount": 16699.0, "currency": "EUR"}, "amount: Input should be a valid"),
    (PaymentEvent, {"payment_id": "p", "order_id": 7, "status": "succeeded", "amount": 1,
                    "currency": "EUR"}, "order_id: Input should be a valid string"),
    (RatingChanged, {"product_id": str(PRODUCT), "count": 1, "average": 9.5},
     "rating 9.5 over 1 reviews is out of range"),
    (RatingChanged, {"product_id": str(PRODUCT)}, "count: Field required"),
    (PriceChanged, {"product_id": str(PRODUCT), "variant_id": str(VARIANT)},
     "not a price change: new: Field required"),
    (StockChanged, {"product_id": str(PRODUCT), "variant_id": str(VARIANT),
                    "available": "many"}, "available: Input should be a valid integer"),
    (InventoryHold, {"reservation_id": str(ORDER), "lines": [], "expires_at": 3},
     "expires_at: Input should be a valid string"),
])
def test_a_payload_that_does_not_fit_is_refused_with_what_is_wrong(
        model: type[EventPayload], payload: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidPayload) as refused:
        model.parse(payload)
    assert problem in str(refused.value)
    assert is_poison(refused.value)  # dead-lettered at once, never retried


def test_a_payload_of_a_newer_version_is_refused_rather_than_misread() -> None:
    with pytest.raises(InvalidPayload, match="schema version 2 is newer than the 1"):
        SagaCommand.parse({"order_id": str(ORDER), "action": "charge", "attempt": 0},
                          schema_version=2)


def test_a_summary_without_reviews_has_no_rating_whatever_its_average() -> None:
    assert RatingChanged.parse({"product_id": str(PRODUCT), "count": 0,
                                "average": 9.5}).rating is None


def test_fields_a_consumer_does_not_know_are_ignored_and_missing_lines_are_none() -> None:
    change = OrderStatusChanged.parse({"order_id": str(ORDER), "owner": "u", "status": "PAID",
                                       "lines": None, "coupon": "X"})
    assert change.lines == []


# -- round trips -----------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
                max_size=30)


@settings(max_examples=80, deadline=None)
@given(st.builds(OrderStatusChanged, order_id=st.uuids(), owner=texts, status=texts,
                 previous=st.none() | texts, reason=st.none() | texts))
def test_an_order_status_change_round_trips(change: OrderStatusChanged) -> None:
    assert OrderStatusChanged.parse(json.loads(json.dumps(change.wire()))) == change


@settings(max_examples=80, deadline=None)
@given(st.builds(PaymentEvent, payment_id=texts, order_id=texts, intent_id=st.none() | texts,
                 status=texts, amount=st.integers(0, 10**12), currency=texts,
                 refunded_amount=st.integers(0, 10**12), needs_review=st.booleans()))
def test_a_payment_event_round_trips(payment: PaymentEvent) -> None:
    assert PaymentEvent.parse(json.loads(json.dumps(payment.wire()))) == payment


# -- the saga's check --------------------------------------------------------------------------


async def test_a_payment_event_that_does_not_fit_is_refused_and_alarmed_never_applied(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The order saga reads payment news through the contract: a forged event whose amount
    is text is kept and alarmed as malformed, and the saga is not even looked up."""
    from services.core.events.envelope import EventEnvelope
    from services.order import orchestrator as orchestration
    from services.order.saga import Mismatch

    refused: list[Any] = []

    async def connection_of(session: object) -> object:
        return object()

    async def record_refusal(conn: object, refusal: Any) -> None:
        refused.append(refusal)

    async def lock(conn: object, order_id: uuid.UUID) -> None:
        raise AssertionError("a malformed payment event must not reach the saga")

    monkeypatch.setattr(orchestration.repository, "connection_of", connection_of)
    monkeypatch.setattr(orchestration.repository, "record_refusal", record_refusal)
    monkeypatch.setattr(orchestration.repository, "lock_saga", lock)
    event = EventEnvelope.new(PAYMENT_SUCCEEDED, source="payment", key=str(ORDER), payload={
        "payment_id": "p", "order_id": str(ORDER), "intent_id": "pi_1", "status": "succeeded",
        "amount": "16699", "currency": "EUR"})
    # Neither the database nor a participant is reached on this path.
    saga = orchestration.Orchestrator(cast(Any, None), cast(Any, None), "order")

    assert await saga.settle_payment(cast(Any, object()), event, succeeded=True) is None

    (refusal,) = refused
    assert (refusal.reason, refusal.event_type, refusal.amount) == (
        Mismatch.MALFORMED, PAYMENT_SUCCEEDED, "16699")
