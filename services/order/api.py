"""Order routes: checkout (with ``Idempotency-Key``), history, detail with timeline, cancel."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status

from services.core.auth import CurrentUser, OptionalUser, Principal
from services.core.state import AppState
from services.order.cart import Cart, guest_owner, new_guest_token
from services.order.schemas import (
    CancelIn,
    CartCheckoutIn,
    CartItemIn,
    CartLineOut,
    CartOut,
    CartQuantityIn,
    CheckoutIn,
    OrderDetailOut,
    OrderOut,
    StatusChangeOut,
)
from services.order.service import CartService, OrderService

router = APIRouter()


#: Built by the app's lifespan (see :mod:`.app`).
ORDERS = AppState[OrderService]("orders")
Orders = Annotated[OrderService, Depends(ORDERS)]
IdempotencyKey = Annotated[str, Header(
    alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$",
    description="Chosen by the client per checkout; a repeat returns the first order.")]


@router.post("/checkout", status_code=status.HTTP_202_ACCEPTED, tags=["orders"],
             summary="Place an order; its saga reserves, charges and ships in the background",
             responses={200: {"model": OrderOut, "description": "A retry: the order placed "
                              "before with this key"}})
async def checkout(body: CheckoutIn, idempotency_key: IdempotencyKey, orders: Orders,
                   user: CurrentUser, response: Response) -> OrderOut:
    order, created = await orders.checkout(user, body, idempotency_key)
    if not created:
        response.status_code = status.HTTP_200_OK
    return OrderOut.model_validate(order)


@router.get("/orders", tags=["orders"], summary="The caller's orders, newest first")
async def history(orders: Orders, user: CurrentUser,
                  limit: Annotated[int, Query(ge=1, le=100)] = 20,
                  before: Annotated[uuid.UUID | None, Query(
                      description="Page on: the last order id of the previous page.")] = None,
                  ) -> list[OrderOut]:
    return [OrderOut.model_validate(o) for o in await orders.history(user, limit, before)]


@router.get("/orders/{order_id}", tags=["orders"],
            summary="An order with its status timeline (owner or admin)")
async def detail(order_id: uuid.UUID, orders: Orders, user: CurrentUser) -> OrderDetailOut:
    order, timeline = await orders.detail(user, order_id)
    return OrderDetailOut.model_validate({
        **OrderOut.model_validate(order).model_dump(),
        "timeline": [StatusChangeOut.model_validate(t) for t in timeline]})


@router.post("/orders/{order_id}/cancel", tags=["orders"],
             summary="Cancel an order whose shipment does not exist yet; undoes every step")
async def cancel(order_id: uuid.UUID, orders: Orders, user: CurrentUser,
                 body: CancelIn | None = None) -> OrderOut:
    reason = body.reason if body else CancelIn().reason
    return OrderOut.model_validate(await orders.cancel(user, order_id, reason))


# -- cart ------------------------------------------------------------------------------------

CART_TOKEN_HEADER = "X-Cart-Token"


#: Built by the app's lifespan (see :mod:`.app`).
CARTS = AppState[CartService]("carts")
Carts = Annotated[CartService, Depends(CARTS)]
CartToken = Annotated[str | None, Header(
    alias=CART_TOKEN_HEADER, min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
    description="A guest's cart token, as issued in this header by an earlier response.")]


def _cart_owner(user: Principal | None, token: str | None, response: Response) -> str:
    """Signed-in shoppers own their cart; a guest gets (and then sends) a cart token."""
    if user is not None:
        return user.user_id
    if token is None:
        token = new_guest_token()
        response.headers[CART_TOKEN_HEADER] = token
    return guest_owner(token)


def _cart_out(cart: Cart) -> CartOut:
    return CartOut(currency=cart.currency, total=cart.total, lines=[
        CartLineOut(variant_id=line.variant_id, quantity=line.quantity,
                    unit_price=line.unit_price) for line in cart.lines])


@router.get("/cart", tags=["cart"], summary="The caller's cart (or the guest token's)")
async def get_cart(carts: Carts, user: OptionalUser, response: Response,
                   token: CartToken = None) -> CartOut:
    return _cart_out(await carts.carts.get(_cart_owner(user, token, response)))


@router.post("/cart/items", tags=["cart"], summary="Add an item at today's price")
async def add_to_cart(body: CartItemIn, carts: Carts, user: OptionalUser, response: Response,
                      token: CartToken = None) -> CartOut:
    return _cart_out(await carts.add(_cart_owner(user, token, response), body))


@router.put("/cart/items/{variant_id}", tags=["cart"],
            summary="Set an item's quantity (zero removes it)")
async def set_cart_quantity(variant_id: uuid.UUID, body: CartQuantityIn, carts: Carts,
                            user: OptionalUser, response: Response,
                            token: CartToken = None) -> CartOut:
    owner = _cart_owner(user, token, response)
    return _cart_out(await carts.carts.set_quantity(owner, variant_id, body.quantity))


@router.delete("/cart/items/{variant_id}", tags=["cart"], summary="Remove an item")
async def remove_from_cart(variant_id: uuid.UUID, carts: Carts, user: OptionalUser,
                           response: Response, token: CartToken = None) -> CartOut:
    owner = _cart_owner(user, token, response)
    return _cart_out(await carts.carts.set_quantity(owner, variant_id, 0))


@router.post("/cart/merge", tags=["cart"],
             summary="After login: move the guest cart named by X-Cart-Token into yours")
async def merge_cart(carts: Carts, user: CurrentUser, token: CartToken = None) -> CartOut:
    if token is None:
        return _cart_out(await carts.carts.get(user.user_id))
    return _cart_out(await carts.carts.merge(guest_owner(token), user.user_id))


@router.post("/cart/checkout", status_code=status.HTTP_202_ACCEPTED, tags=["cart"],
             summary="Check the cart out; 409 price_changed when a price moved since adding",
             responses={200: {"model": OrderOut, "description": "A retry: the order placed "
                              "before with this key"}})
async def checkout_cart(body: CartCheckoutIn, idempotency_key: IdempotencyKey, carts: Carts,
                        user: CurrentUser, response: Response) -> OrderOut:
    order, created = await carts.checkout(user, body, idempotency_key)
    if not created:
        response.status_code = status.HTTP_200_OK
    return OrderOut.model_validate(order)
