"""Shipping routes: public rate quotes; shipments, cancellation and tracking for the order
saga (``service`` role) and admins; shipment detail with tracking for its shopper."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from services.core.auth import CurrentUser
from services.core.state import AppState
from services.shipping.schemas import (
    QuoteOut,
    RatesIn,
    ShipmentDetailOut,
    ShipmentIn,
    ShipmentOut,
    TrackingIn,
    TrackingOut,
)
from services.shipping.service import ShippingService

router = APIRouter()


#: Built by the app's lifespan (see :mod:`.app`).
SHIPPING = AppState[ShippingService]("shipping")
Shipping = Annotated[ShippingService, Depends(SHIPPING)]


@router.post("/rates", tags=["rates"], summary="Offers for a parcel set, cheapest first")
async def rates(body: RatesIn, shipping: Shipping) -> list[QuoteOut]:
    offers = await shipping.rates(body.destination_country, body.parcels, body.currency,
                                  body.service_levels, body.destination_postal_code)
    return [QuoteOut(carrier=o.carrier, service_level=o.service_level, amount=o.amount,
                     currency=o.currency, transit_days_min=o.transit_days_min,
                     transit_days_max=o.transit_days_max,
                     billable_weight_grams=o.billable_weight_grams) for o in offers]


@router.post("/shipments", status_code=status.HTTP_201_CREATED, tags=["shipments"],
             summary="Create a shipment and its label (service or admin; idempotent by id)",
             responses={200: {"model": ShipmentOut, "description": "A retry: the shipment "
                              "created before"}})
async def create_shipment(body: ShipmentIn, shipping: Shipping, user: CurrentUser,
                          response: Response) -> ShipmentOut:
    shipment, created = await shipping.create(user, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return ShipmentOut.model_validate(shipment)


@router.post("/shipments/{shipment_id}/cancel", tags=["shipments"],
             summary="Cancel a shipment not yet picked up (idempotent)")
async def cancel_shipment(shipment_id: uuid.UUID, shipping: Shipping,
                          user: CurrentUser) -> ShipmentOut:
    return ShipmentOut.model_validate(await shipping.cancel(user, shipment_id))


@router.post("/shipments/{shipment_id}/tracking", tags=["shipments"],
             summary="Record a carrier scan; a delivered scan publishes shipment.delivered")
async def track_shipment(shipment_id: uuid.UUID, body: TrackingIn, shipping: Shipping,
                         user: CurrentUser) -> ShipmentOut:
    return ShipmentOut.model_validate(await shipping.track(user, shipment_id, body))


@router.get("/shipments/{shipment_id}", tags=["shipments"],
            summary="A shipment with its tracking history (its shopper, service or admin)")
async def shipment_detail(shipment_id: uuid.UUID, shipping: Shipping,
                          user: CurrentUser) -> ShipmentDetailOut:
    shipment, events = await shipping.detail(user, shipment_id)
    return ShipmentDetailOut.model_validate({
        **ShipmentOut.model_validate(shipment).model_dump(),
        "tracking": [TrackingOut.model_validate(e) for e in events]})
