"""Rates, shipments and tracking.

A shipment is created once per caller-chosen id (the order saga derives it from the order),
so a retried create returns the first shipment and its label. Tracking events are stored
once per (shipment, status, time) and only move a shipment forward: a late "in transit"
scan never un-delivers a parcel.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.core.auth import Principal
from services.core.db import Database
from services.core.errors import Conflict, Forbidden, NotFound, Unprocessable
from services.core.events.outbox import add_event
from services.shipping import events, repository
from services.shipping.models import Shipment, TrackingEvent
from services.shipping.rates import (
    Carrier,
    Parcel,
    Quote,
    RateError,
    RateRequest,
    ServiceLevel,
    quote,
)
from services.shipping.schemas import ParcelIn, ShipmentIn, TrackingIn
from services.shipping.settings import ShippingSettings

PRIVILEGED_ROLES = frozenset({"admin", "service"})

#: How far along each status is; tracking only moves a shipment forward.
PROGRESS = {"created": 0, "picked_up": 1, "in_transit": 2, "out_for_delivery": 3,
            "exception": 3, "delivered": 4}
FINAL = {"delivered", "cancelled"}


def _privileged(principal: Principal) -> None:
    if not principal.roles & PRIVILEGED_ROLES:
        raise Forbidden("the 'admin' or 'service' role is required", code="missing_role")


def _touch(shipment: Shipment) -> None:
    """Stamp a change to ``shipment``, just before the event that announces it."""
    shipment.updated_at = datetime.now(UTC)


def _parcels(parcels: Sequence[ParcelIn]) -> tuple[Parcel, ...]:
    return tuple(Parcel(p.weight_grams, p.length_mm, p.width_mm, p.height_mm) for p in parcels)


class ShippingService:
    def __init__(self, database: Database, carriers: Sequence[Carrier],
                 settings: ShippingSettings) -> None:
        self.database = database
        self.carriers = carriers
        self.settings = settings

    async def rates(self, destination: str, parcels: Sequence[ParcelIn], currency: str,
                    levels: Sequence[str], destination_postal_code: str | None = None,
                    ) -> list[Quote]:
        try:
            return await quote(self.carriers, RateRequest(
                self.settings.ship_from_country, destination, _parcels(parcels), currency,
                frozenset(ServiceLevel(level) for level in levels),
                origin_postal_code=self.settings.ship_from_postal_code,
                destination_postal_code=destination_postal_code),
                self.settings.carrier_timeout_seconds)
        except RateError as exc:
            raise Unprocessable(str(exc), code="no_rate") from exc

    async def create(self, principal: Principal, body: ShipmentIn) -> tuple[Shipment, bool]:
        _privileged(principal)
        # One transaction from the repeat check to the insert: a retried request is found
        # before any rate is quoted, and a new shipment costs five round trips, not nine.
        async with self.database.session() as session, session.begin():
            existing = await repository.shipment(session, body.id)
            if existing is not None:
                return self._repeat(existing, body), False
            offers = await self.rates(body.address.country, body.parcels, body.currency,
                                      [body.service_level], body.address.postal_code)
            chosen = offers[0]
            tracking = f"KM{secrets.token_hex(8).upper()}"
            label = {"format": "record", "carrier": chosen.carrier,
                     "tracking_number": tracking,
                     "ship_from_country": self.settings.ship_from_country,
                     "ship_to": body.address.model_dump(),
                     "service_level": chosen.service_level,
                     "billable_weight_grams": chosen.billable_weight_grams}
            shipment = await repository.insert_shipment(session, {
                "id": body.id, "order_id": body.order_id, "owner": body.owner,
                "status": "created", "carrier": chosen.carrier,
                "service_level": chosen.service_level.value, "tracking_number": tracking,
                "amount": chosen.amount, "currency": chosen.currency,
                "address": body.address.model_dump(),
                "parcels": [p.model_dump() for p in body.parcels], "label": label})
            if shipment is None:  # a concurrent request with this id committed first
                existing = await repository.shipment(session, body.id)
                assert existing is not None
                return self._repeat(existing, body), False
            await add_event(session, events.shipment_created(
                shipment, source=self.settings.service_name))
        return shipment, True

    @staticmethod
    def _repeat(existing: Shipment, body: ShipmentIn) -> Shipment:
        if existing.order_id != body.order_id:
            raise Conflict("this shipment id belongs to another order",
                           code="shipment_id_reused")
        return existing

    async def cancel(self, principal: Principal, shipment_id: uuid.UUID) -> Shipment:
        _privileged(principal)
        async with self.database.session() as session, session.begin():
            shipment = await self._locked(session, shipment_id)
            if shipment.status == "cancelled":
                return shipment
            if PROGRESS.get(shipment.status, 0) > 0:
                raise Conflict(f"a {shipment.status} shipment can no longer be cancelled",
                               code="shipment_not_cancellable")
            shipment.status = "cancelled"
            _touch(shipment)
            await add_event(session, events.shipment_cancelled(
                shipment, source=self.settings.service_name))
        return shipment

    async def track(self, principal: Principal, shipment_id: uuid.UUID,
                    body: TrackingIn) -> Shipment:
        _privileged(principal)
        async with self.database.session() as session, session.begin():
            shipment = await self._locked(session, shipment_id)
            if shipment.status == "cancelled":
                raise Conflict("the shipment was cancelled", code="shipment_cancelled")
            added = await repository.add_scan(
                session, shipment.id, status=body.status.value,
                description=body.description, location=body.location,
                occurred_at=body.occurred_at)
            if not added or shipment.status in FINAL:
                return shipment
            if PROGRESS[body.status.value] >= PROGRESS.get(shipment.status, 0):
                shipment.status = body.status.value
                _touch(shipment)
                await add_event(session, events.shipment_status_changed(
                    shipment, body.description, source=self.settings.service_name))
                if shipment.status == "delivered":
                    _touch(shipment)
                    await add_event(session, events.shipment_delivered(
                        shipment, body.description, source=self.settings.service_name))
        return shipment

    async def detail(self, principal: Principal,
                     shipment_id: uuid.UUID) -> tuple[Shipment, list[TrackingEvent]]:
        async with self.database.session() as session:
            shipment = await repository.shipment(session, shipment_id)
            if shipment is None or not (shipment.owner == principal.user_id
                                        or principal.roles & PRIVILEGED_ROLES):
                raise NotFound("no such shipment", code="shipment_not_found")
            return shipment, await repository.tracking_events(session, shipment_id)

    async def _locked(self, session: AsyncSession, shipment_id: uuid.UUID) -> Shipment:
        shipment = await repository.shipment(session, shipment_id, for_update=True)
        if shipment is None:
            raise NotFound("no such shipment", code="shipment_not_found")
        return shipment
