"""Checkout, order history and cancellation.

Checkout is idempotent per (shopper, ``Idempotency-Key``): the order row, its saga and the
saga's first command commit in one transaction guarded by a unique constraint, so the same
key sent twice — even at the same instant — yields one order, one saga and therefore one
charge. Prices come from the catalog at checkout, never from the client.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from services.core.auth import Principal
from services.core.db import Database
from services.core.errors import Conflict, NotFound, Unprocessable
from services.order import repository
from services.order.cart import Cart, CartStore
from services.order.models import Order, OrderStatusChange
from services.order.orchestrator import Orchestrator
from services.order.saga import CancelRequested, SagaState
from services.order.schemas import CartCheckoutIn, CartItemIn, CheckoutIn, CheckoutLineIn


class Pricing(Protocol):
    """Current unit prices in ``currency`` for the given variants; a variant without a
    price there is simply absent from the answer."""

    async def prices(self, variant_ids: list[uuid.UUID], currency: str) -> dict[uuid.UUID, int]:
        ...


def _fingerprint(body: CheckoutIn) -> list[Any]:
    return sorted([str(line.variant_id), line.quantity] for line in body.lines)


class OrderService:
    def __init__(self, database: Database, orchestrator: Orchestrator, pricing: Pricing) -> None:
        self.database = database
        self.orchestrator = orchestrator
        self.pricing = pricing

    async def checkout(self, principal: Principal, body: CheckoutIn,
                       idempotency_key: str) -> tuple[Order, bool]:
        """Place an order and start its saga once per key; a repeat returns the first.

        A new order is the common case, so the key is not looked up first: the insert
        finds a repeat by its conflict (a repeat therefore also asks the catalog for
        prices, which a retry can afford)."""
        ids = [line.variant_id for line in body.lines]
        prices = await self.pricing.prices(ids, body.currency)
        missing = [str(i) for i in ids if i not in prices]
        if missing:
            existing = await self.by_key(principal.user_id, idempotency_key)
            if existing is not None:  # a retry of an order placed before the delisting
                return self._same_request(existing, body), False
            raise Unprocessable("some items are not sold in this currency",
                                code="unknown_variant", details={"variant_ids": missing})
        lines = [{"variant_id": str(line.variant_id), "quantity": line.quantity,
                  "unit_price": prices[line.variant_id]} for line in body.lines]
        total = sum(prices[line.variant_id] * line.quantity for line in body.lines)
        order_id = uuid.uuid4()
        async with self.database.session() as session, session.begin():
            order = await repository.insert_order(session, {
                "id": order_id, "owner": principal.user_id,
                "idempotency_key": idempotency_key, "status": SagaState.PENDING.value,
                "currency": body.currency, "total": total, "lines": lines,
                "payment_method": body.payment_method,
                "shipping_address": body.shipping_address.model_dump()})
            if order is None:
                # An earlier request with this key (perhaps a concurrent one, which has
                # committed by now: the conflict waited for it).
                existing = await self.by_key(principal.user_id, idempotency_key, session)
                assert existing is not None
                return self._same_request(existing, body), False
            await self.orchestrator.begin(session, order)
        return order, True

    @staticmethod
    def _same_request(order: Order, body: CheckoutIn) -> Order:
        lines = sorted([line["variant_id"], line["quantity"]] for line in order.lines)
        if lines != _fingerprint(body) or order.currency != body.currency:
            raise Unprocessable("this Idempotency-Key was used for another checkout",
                                code="idempotency_key_reused")
        return order

    async def by_key(self, owner: str, key: str,
                     session: AsyncSession | None = None) -> Order | None:
        if session is not None:
            return await repository.order_by_key(session, owner, key)
        async with self.database.session() as own:
            return await repository.order_by_key(own, owner, key)

    async def history(self, principal: Principal, limit: int,
                      before: uuid.UUID | None) -> list[Order]:
        async with self.database.session() as session:
            anchor = None
            if before is not None:
                anchor = await repository.order_by_id(session, before)
                if anchor is None or anchor.owner != principal.user_id:
                    raise NotFound("no such order", code="order_not_found")
            return await repository.orders_of(session, principal.user_id, limit,
                                              older_than=anchor)

    async def detail(self, principal: Principal,
                     order_id: uuid.UUID) -> tuple[Order, list[OrderStatusChange]]:
        async with self.database.session() as session:
            order = await repository.order_by_id(session, order_id)
            if order is None or not (order.owner == principal.user_id
                                     or principal.has_role("admin")):
                raise NotFound("no such order", code="order_not_found")
            return order, await repository.timeline(session, order_id)

    async def cancel(self, principal: Principal, order_id: uuid.UUID, reason: str) -> Order:
        await self.detail(principal, order_id)  # 404 unless the caller may see it
        async with self.database.session() as session, session.begin():
            saga = await self.orchestrator.apply(session, order_id, CancelRequested(reason))
            order = await repository.order_by_id(session, order_id)
            assert order is not None and saga is not None
        if saga.state not in (SagaState.CANCELLING, SagaState.CANCELLED):
            raise Conflict(f"a {saga.state.value} order can no longer be cancelled",
                           code="order_not_cancellable")
        return order


class CartService:
    """The cart's rules: prices come from the catalog, a checkout re-checks them."""

    def __init__(self, carts: CartStore, pricing: Pricing, orders: OrderService) -> None:
        self.carts = carts
        self.pricing = pricing
        self.orders = orders

    async def add(self, owner: str, body: CartItemIn) -> Cart:
        prices = await self.pricing.prices([body.variant_id], body.currency)
        if body.variant_id not in prices:
            raise Unprocessable("this item is not sold in this currency",
                                code="unknown_variant")
        return await self.carts.add(owner, body.variant_id, body.quantity, body.currency,
                                    prices[body.variant_id])

    async def checkout(self, principal: Principal, body: CartCheckoutIn,
                       idempotency_key: str) -> tuple[Order, bool]:
        """Check the cart out; refuse (and refresh the snapshot) when a price moved."""
        cart = await self.carts.get(principal.user_id)
        if not cart.lines or cart.currency is None:
            existing = await self.orders.by_key(principal.user_id, idempotency_key)
            if existing is not None:  # a retry after the cart was already emptied
                return existing, False
            raise Unprocessable("the cart is empty", code="cart_empty")
        ids = [line.variant_id for line in cart.lines]
        current = await self.pricing.prices(ids, cart.currency)
        changed = [{"variant_id": str(line.variant_id), "was": line.unit_price,
                    "now": current.get(line.variant_id)}
                   for line in cart.lines if current.get(line.variant_id) != line.unit_price]
        if changed:
            await self.carts.refresh_prices(principal.user_id, current)
            raise Conflict("prices changed since these items were added; review the cart",
                           code="price_changed", details=changed)
        order, created = await self.orders.checkout(principal, CheckoutIn(
            lines=[CheckoutLineIn(variant_id=line.variant_id, quantity=line.quantity)
                   for line in cart.lines],
            currency=cart.currency, payment_method=body.payment_method,
            shipping_address=body.shipping_address), idempotency_key)
        if created:
            await self.carts.clear(principal.user_id)
        return order, created
