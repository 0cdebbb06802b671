"""The product service's events, built in :mod:`services.product.events`, are the rows the
core's Publisher wrote (before it went): same type, source, key, topic and payload, key order
included."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from services.core.events.envelope import EventEnvelope
from services.core.events.outbox import outbox_row
from services.product import events
from services.product.models import Product, Reservation, ReservationLine, Variant
from services.product.service import product_out
from tests.services.support import comparable, published_as_the_core_did

SOURCE = "product"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def built(event: EventEnvelope) -> list[dict[str, Any]]:
    return comparable(outbox_row(event))


def published_before(event_type: str, key: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    return comparable(published_as_the_core_did(SOURCE, event_type, key, payload))


def same(event: EventEnvelope, event_type: str, key: str, payload: dict[str, Any]) -> None:
    assert json.dumps(built(event)) == json.dumps(published_before(event_type, key, payload))
    [row] = built(event)
    assert (row["topic"], row["event_type"], row["event_key"]) == (
        "product.events", event_type, key)


def product() -> Product:
    product_id = uuid.uuid4()
    return Product(id=product_id, category="shoes", name="Runner", description="",
                   attributes={"brand": "k"}, images=[], version=3, created_at=NOW,
                   updated_at=NOW, variants=[Variant(
                       id=uuid.uuid4(), product_id=product_id, sku="RUN-42", name="42",
                       position=0, attributes={"size": "42"}, price_amount=8999,
                       currency="EUR", on_hand=5, reserved=1, created_at=NOW,
                       updated_at=NOW)])


def stock_row(p: Product) -> Any:
    v = p.variants[0]
    return SimpleNamespace(id=v.id, product_id=p.id, sku=v.sku, on_hand=7, reserved=2)


def reservation(p: Product) -> Reservation:
    v = p.variants[0]
    hold = uuid.uuid4()
    return Reservation(id=hold, owner="svc-order", status="active",
                       expires_at=NOW + timedelta(minutes=15), created_at=NOW, updated_at=NOW,
                       lines=[ReservationLine(reservation_id=hold, variant_id=v.id,
                                              product_id=p.id, sku=v.sku, quantity=2)])


@pytest.mark.parametrize(("builder", "event_type"), [
    (events.product_created, "product.created"), (events.product_updated, "product.updated")])
def test_a_product_document_is_published_as_it_was(builder: Any, event_type: str) -> None:
    p = product()
    out = product_out(p)
    same(builder(out, source=SOURCE), event_type, str(p.id), out.model_dump(mode="json"))


def test_a_deletion_is_published_as_it_was() -> None:
    p = product()
    same(events.product_deleted(p, source=SOURCE), "product.deleted", str(p.id),
         {"id": str(p.id), "category": "shoes", "version": 4})


def test_a_price_change_is_published_as_it_was() -> None:
    p = product()
    v = p.variants[0]
    old, new = {"amount": 8999, "currency": "EUR"}, {"amount": 7999, "currency": "EUR"}
    same(events.price_changed(p.id, v.id, v.sku, old, new, changed_at=NOW, source=SOURCE),
         "price.changed", str(p.id),
         {"product_id": str(p.id), "variant_id": str(v.id), "sku": v.sku, "old": old,
          "new": new, "changed_at": NOW.isoformat()})


@pytest.mark.parametrize("reason", [None, "", "stock count"])
def test_a_stock_change_is_published_as_it_was(reason: str | None) -> None:
    p = product()
    row = stock_row(p)
    payload: dict[str, Any] = {"variant_id": str(row.id), "product_id": str(p.id),
                               "sku": row.sku, "on_hand": 7, "reserved": 2, "available": 5}
    if reason:
        payload["reason"] = reason
    same(events.stock_changed(row, reason=reason, source=SOURCE), "stock.changed", str(p.id),
         payload)


def hold(part: Reservation, reason: str | None = None) -> dict[str, Any]:
    [line] = part.lines
    payload: dict[str, Any] = {
        "reservation_id": str(part.id),
        "lines": [{"variant_id": str(line.variant_id), "product_id": str(line.product_id),
                   "sku": line.sku, "quantity": 2}],
        "owner": part.owner, "expires_at": part.expires_at.isoformat()}
    if reason is not None:
        payload["reason"] = reason
    return payload


def test_a_hold_is_published_as_it_was() -> None:
    part = reservation(product())
    same(events.inventory_reserved(part.id, part.lines, owner="svc-order",
                                   expires_at=part.expires_at, source=SOURCE),
         "inventory.reserved", str(part.id), hold(part))
    same(events.inventory_committed(part, source=SOURCE), "inventory.committed",
         str(part.id), hold(part))


@pytest.mark.parametrize("reason", ["released", "expired", "aborted"])
def test_a_release_is_published_as_it_was(reason: str) -> None:
    part = reservation(product())
    same(events.inventory_released(part, reason=reason, source=SOURCE), "inventory.released",
         str(part.id), hold(part, reason))
