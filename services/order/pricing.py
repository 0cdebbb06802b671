"""Prices from the catalog, looked up by variant id over HTTP.

A cart line and a checkout line name only a variant; the product service answers
``GET /variants/{id}`` with the variant's current price wherever its product is sharded.
Lookups for one cart run concurrently, so re-validating a cart at checkout costs one round
trip, not one per line. A variant that does not exist, or is priced in another currency, is
simply absent from the answer (the caller turns that into the shopper's error); anything
else — a 5xx, a timeout, an open breaker — raises, because a checkout must never be priced
from a guess.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx

from services.core.http import UpstreamUnavailable
from services.order.participants import HttpCaller


class HttpPricing:
    def __init__(self, product: HttpCaller) -> None:
        self.product = product

    async def _price(self, variant_id: uuid.UUID, currency: str) -> int | None:
        response: httpx.Response = await self.product.get(f"/variants/{variant_id}")
        if response.status_code in (404, 422):
            return None
        if response.status_code != 200:
            raise UpstreamUnavailable(
                f"the catalog could not price variant {variant_id}; retry later",
                details={"target": "product", "status": response.status_code})
        price = response.json()["price"]
        # The catalog spells currencies as ISO codes (USD), orders as Stripe does (usd).
        if str(price["currency"]).lower() != currency.lower():
            return None
        return int(price["amount"])

    async def prices(self, variant_ids: list[uuid.UUID], currency: str) -> dict[uuid.UUID, int]:
        unique = list(dict.fromkeys(variant_ids))
        found = await asyncio.gather(*(self._price(v, currency) for v in unique))
        return {v: amount for v, amount in zip(unique, found, strict=True)
                if amount is not None}
