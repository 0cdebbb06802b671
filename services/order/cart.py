"""Shopping carts in Redis.

A cart is two hashes — quantities and the unit price seen when each line was added (the
snapshot) — plus its currency, all under one key prefix and one expiry. Quantities change
with ``HINCRBY``/``HSET`` so concurrent adds from two tabs both count. A guest's cart is
named by an opaque token the service issues; on login it is merged into the shopper's cart
atomically (a Lua script) so nothing added by the guest is lost or counted twice.

Prices are snapshots, not promises: checkout compares each one with the catalog's current
price and, when any changed, refreshes the snapshot and refuses, so the shopper confirms the
new total before paying it.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

from services.core.errors import Conflict, Unprocessable

MAX_LINES = 100
MAX_QUANTITY = 10_000

_MERGE = """
local guest_qty, guest_price, guest_meta = KEYS[1], KEYS[2], KEYS[3]
local user_qty, user_price, user_meta = KEYS[4], KEYS[5], KEYS[6]
local ttl, max_quantity = tonumber(ARGV[1]), tonumber(ARGV[2])
local guest_currency = redis.call('HGET', guest_meta, 'currency')
local user_currency = redis.call('HGET', user_meta, 'currency')
if guest_currency and user_currency and guest_currency ~= user_currency then
  return -1
end
local lines = redis.call('HGETALL', guest_qty)
for i = 1, #lines, 2 do
  local total = redis.call('HINCRBY', user_qty, lines[i], lines[i + 1])
  if total > max_quantity then redis.call('HSET', user_qty, lines[i], max_quantity) end
  local price = redis.call('HGET', guest_price, lines[i])
  if price then redis.call('HSETNX', user_price, lines[i], price) end
end
if guest_currency then redis.call('HSETNX', user_meta, 'currency', guest_currency) end
redis.call('DEL', guest_qty, guest_price, guest_meta)
for _, key in ipairs({user_qty, user_price, user_meta}) do
  if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, ttl) end
end
return #lines / 2
"""


@dataclass(frozen=True, slots=True)
class CartLine:
    variant_id: uuid.UUID
    quantity: int
    unit_price: int


@dataclass(frozen=True, slots=True)
class Cart:
    currency: str | None
    lines: tuple[CartLine, ...]

    @property
    def total(self) -> int:
        return sum(line.quantity * line.unit_price for line in self.lines)


def guest_owner(token: str) -> str:
    return f"guest:{token}"


def new_guest_token() -> str:
    """Unguessable: the token is the only thing that proves a guest cart is yours."""
    return secrets.token_urlsafe(24)


class CartStore:
    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl_seconds

    def _keys(self, owner: str) -> tuple[str, str, str]:
        base = f"{self.prefix}cart:{{{owner}}}"  # one hash slot per cart (cluster-safe)
        return f"{base}:qty", f"{base}:price", f"{base}:meta"

    async def get(self, owner: str) -> Cart:
        qty_key, price_key, meta_key = self._keys(owner)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(qty_key)
            pipe.hgetall(price_key)
            pipe.hget(meta_key, "currency")
            quantities, prices, currency = await pipe.execute()
        lines = tuple(sorted(
            (CartLine(uuid.UUID(_text(v)), int(q), int(prices.get(v, 0)))
             for v, q in quantities.items() if int(q) > 0),
            key=lambda line: str(line.variant_id)))
        return Cart(_text(currency) if currency else None, lines)

    async def add(self, owner: str, variant_id: uuid.UUID, quantity: int, currency: str,
                  unit_price: int) -> Cart:
        """Add ``quantity`` (on top of what is there) with a fresh price snapshot."""
        await self._check_currency(owner, currency)
        qty_key, price_key, meta_key = self._keys(owner)
        cart = await self.get(owner)
        if len(cart.lines) >= MAX_LINES and all(
                line.variant_id != variant_id for line in cart.lines):
            raise Unprocessable(f"a cart holds at most {MAX_LINES} lines", code="cart_full")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(qty_key, str(variant_id), quantity)
            pipe.hset(price_key, str(variant_id), unit_price)
            pipe.hsetnx(meta_key, "currency", currency)
            for key in (qty_key, price_key, meta_key):
                pipe.expire(key, self.ttl)
            total, *_ = await pipe.execute()
        if int(total) > MAX_QUANTITY:
            await self.redis.hset(qty_key, str(variant_id), MAX_QUANTITY)
        return await self.get(owner)

    async def set_quantity(self, owner: str, variant_id: uuid.UUID, quantity: int) -> Cart:
        """Set a line's quantity; zero removes it."""
        qty_key, price_key, _ = self._keys(owner)
        if not await self.redis.hexists(qty_key, str(variant_id)):
            raise Unprocessable("that item is not in the cart", code="not_in_cart")
        if quantity == 0:
            await self.redis.hdel(qty_key, str(variant_id))
            await self.redis.hdel(price_key, str(variant_id))
        else:
            await self.redis.hset(qty_key, str(variant_id), quantity)
        return await self.get(owner)

    async def refresh_prices(self, owner: str, prices: dict[uuid.UUID, int]) -> None:
        _, price_key, _ = self._keys(owner)
        if prices:
            await self.redis.hset(price_key, mapping={str(k): v for k, v in prices.items()})

    async def clear(self, owner: str) -> None:
        await self.redis.delete(*self._keys(owner))

    async def merge(self, guest: str, owner: str) -> Cart:
        """Move a guest's cart into ``owner``'s, adding quantities; atomic."""
        keys = [*self._keys(guest), *self._keys(owner)]
        merged = await self.redis.eval(
            _MERGE, len(keys), *keys, self.ttl, MAX_QUANTITY)
        if int(merged) < 0:
            raise Conflict("the guest cart is in another currency", code="currency_mismatch")
        return await self.get(owner)

    async def _check_currency(self, owner: str, currency: str) -> None:
        existing = await self.redis.hget(self._keys(owner)[2], "currency")
        if existing is not None and _text(existing) != currency:
            raise Conflict(f"this cart is in {_text(existing)}; empty it to change currency",
                           code="currency_mismatch")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
