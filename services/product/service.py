"""The catalog's rules: categories, products, variants, prices and stock counts.

Writes follow one pattern: find the shard that holds the row, change it under a row lock,
publish the event in the same transaction, and drop the cached product document *after*
the commit (a reader that fills the cache before the commit cannot undo that: the core's
fill lease refuses its stale value). Reads of a product go through the cache: warm, no
Redis round trip at all (the core's near cache keeps the document's bytes in the process
and every process drops them when any one invalidates), else one Redis GET.

Two facts span shards and live in the service's own database: that a category exists, and
that a SKU is taken (``sku_claims``: the shards' unique index sees one shard only). A SKU is
claimed before the shard write and given back if the write fails; a claim left behind by a
process that died in between is taken over once it is old and its variant exists nowhere.
Without a shard map both databases are one and the claim commits with the product.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.cache import Cache
from services.core.db import Database
from services.core.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from services.core.events.outbox import add_event
from services.product import events
from services.product import repository as repo
from services.product.models import Category, Product, Variant
from services.product.repository import ProductFilter, Shard, ShardRouter
from services.product.schemas import (
    CategoryIn,
    CategoryOut,
    CategoryPatch,
    Money,
    PriceIn,
    ProductIn,
    ProductOut,
    ProductPage,
    ProductPatch,
    ProductSort,
    Stock,
    StockUpdate,
    VariantIn,
    VariantLookupOut,
    VariantOut,
    VariantPatch,
)
from services.product.settings import ProductSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
Document = dict[str, Any]
#: ``str(uuid.UUID(...))``'s spelling, the one cache keys use.
_CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def utcnow() -> datetime:
    return datetime.now(UTC)


def variant_out(variant: Variant) -> VariantOut:
    return VariantOut(
        id=variant.id, sku=variant.sku, name=variant.name, attributes=variant.attributes,
        price=Money(amount=variant.price_amount, currency=variant.currency),
        stock=Stock(on_hand=variant.on_hand, reserved=variant.reserved,
                    available=variant.on_hand - variant.reserved),
    )


def product_out(product: Product) -> ProductOut:
    return ProductOut(
        id=product.id, category=product.category, name=product.name,
        description=product.description, attributes=product.attributes,
        images=product.images, variants=[variant_out(v) for v in product.variants],
        version=product.version, created_at=product.created_at,
        updated_at=product.updated_at,
    )


# -- listing cursors -------------------------------------------------------------------------


def encode_cursor(sort: ProductSort, key: Any, product_id: uuid.UUID) -> str:
    value = key.isoformat() if isinstance(key, datetime) else key
    raw = orjson.dumps([sort.value, value, str(product_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: ProductSort) -> tuple[Any, uuid.UUID]:
    """The keyset a cursor stands for; a cursor from another sort order or a mangled one is
    the client's mistake, said plainly."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_sort, value, product_id = orjson.loads(raw)
        if cursor_sort != sort.value:
            raise ValueError("cursor belongs to another sort order")
        key: Any
        if sort in (ProductSort.NEWEST, ProductSort.OLDEST):
            key = datetime.fromisoformat(value)
            if key.tzinfo is None:
                raise ValueError("naive timestamp")
        elif sort is ProductSort.NAME:
            if not isinstance(value, str):
                raise ValueError("name expected")
            key = value
        else:
            if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 2**62:
                raise ValueError("price expected")
            key = value
        return key, uuid.UUID(product_id)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidRequest("the cursor is not valid for this listing; start again without "
                             "it", code="invalid_cursor") from exc


class CatalogService:
    def __init__(self, shards: ShardRouter, cache: Cache, settings: ProductSettings) -> None:
        """``settings.service_name`` is the source of the events the catalog publishes."""
        self.shards = shards
        self.cache = cache
        self.settings = settings

    @property
    def home(self) -> Database:
        """The service's own database: categories and SKU claims."""
        return self.shards.home

    # -- cache -------------------------------------------------------------------------------

    async def invalidate(self, product_ids: Sequence[uuid.UUID] | set[uuid.UUID]) -> None:
        """Drop cached documents; call after the change committed."""
        await self.cache.invalidate(*(str(pid) for pid in product_ids))

    # -- categories --------------------------------------------------------------------------

    def _category_out(self, category: Category) -> CategoryOut:
        return CategoryOut(slug=category.slug, name=category.name,
                           description=category.description, parent=category.parent_slug,
                           shard=self.shards.shard_for(category.slug),
                           created_at=category.created_at, updated_at=category.updated_at)

    async def list_categories(self) -> list[CategoryOut]:
        async with self.home.session() as session:
            rows = await repo.categories(session)
            return [self._category_out(c) for c in rows]

    async def get_category(self, slug: str) -> CategoryOut:
        async with self.home.session() as session:
            category = await repo.category(session, slug)
        if category is None:
            raise NotFound(f"there is no category {slug!r}")
        return self._category_out(category)

    async def create_category(self, body: CategoryIn) -> CategoryOut:
        now = utcnow()
        async with self.home.session() as session, session.begin():
            if await repo.category(session, body.slug) is not None:
                raise Conflict(f"category {body.slug!r} already exists", code="category_exists")
            if body.parent is not None and await repo.category(session, body.parent) is None:
                raise Unprocessable(f"the parent category {body.parent!r} does not exist",
                                    code="unknown_category")
            category = Category(slug=body.slug, name=body.name, description=body.description,
                                parent_slug=body.parent, created_at=now, updated_at=now)
            repo.add_category(session, category)
        return self._category_out(category)

    async def update_category(self, slug: str, patch: CategoryPatch) -> CategoryOut:
        async with self.home.session() as session, session.begin():
            category = await repo.category(session, slug, for_update=True)
            if category is None:
                raise NotFound(f"there is no category {slug!r}")
            if "parent" in patch.model_fields_set:
                await self._check_parent(session, slug, patch.parent)
                category.parent_slug = patch.parent
            if patch.name is not None:
                category.name = patch.name
            if patch.description is not None:
                category.description = patch.description
            category.updated_at = utcnow()
        return self._category_out(category)

    async def _check_parent(self, session: AsyncSession, slug: str, parent: str | None) -> None:
        """The parent exists and is not the category itself or one of its descendants."""
        seen = {slug}
        current = parent
        while current is not None:
            if current in seen:
                raise Unprocessable(f"making {parent!r} the parent of {slug!r} would create "
                                    "a cycle", code="category_cycle")
            seen.add(current)
            found = await repo.category(session, current)
            if found is None:
                raise Unprocessable(f"the parent category {current!r} does not exist",
                                    code="unknown_category")
            current = found.parent_slug

    async def delete_category(self, slug: str) -> None:
        in_use = await self.shards.fan_out(lambda shard: self._category_in_use(shard, slug))
        if any(used for _, used in in_use):
            raise Conflict(f"category {slug!r} still has products; move or delete them first",
                           code="category_in_use")
        async with self.home.session() as session, session.begin():
            category = await repo.category(session, slug, for_update=True)
            if category is None:
                raise NotFound(f"there is no category {slug!r}")
            children = await repo.a_subcategory(session, slug)
            if children is not None:
                raise Conflict(f"category {slug!r} has subcategories ({children!r} …); "
                               "delete or move them first", code="category_in_use")
            await repo.delete_category(session, category)

    @staticmethod
    async def _category_in_use(shard: Shard, slug: str) -> bool:
        async with shard.database.session() as session:
            return await repo.category_in_use(session, slug)

    async def _require_category(self, slug: str) -> None:
        async with self.home.session() as session:
            if await repo.category(session, slug) is None:
                raise Unprocessable(f"there is no category {slug!r}; create it first",
                                    code="unknown_category")

    # -- reading products --------------------------------------------------------------------

    def near_product_json(self, product_id: str) -> bytes | None:
        """The product's JSON if this process holds it, else None. Only the canonical
        spelling of an id is looked up; any other (upper case, no dashes, malformed) is
        left to the route, which accepts or rejects it as it always has."""
        return self.cache.peek_json(product_id) if _CANONICAL_UUID.match(product_id) else None

    async def product_json(self, product_id: uuid.UUID) -> bytes:
        """The product's JSON document as cached: the bytes of a validated ``ProductOut``,
        from this process's near copy, Redis, or the shards (then cached in both)."""
        document = await self.cache.get_or_load_json(
            str(product_id), lambda: self._load_document(product_id),
            ttl=self.settings.product_cache_ttl_seconds)
        if document is None:
            raise NotFound(f"there is no product {product_id}")
        return document

    async def _load_document(self, product_id: uuid.UUID) -> Document | None:
        async def load(shard: Shard) -> ProductOut | None:
            async with shard.database.session() as session:
                product = await repo.load_product(session, product_id)
                return None if product is None else product_out(product)

        found = [(shard, out) for shard, out in await self.shards.fan_out(load)
                 if out is not None]
        owner = self.shards.prefer_owner([(shard, out.category) for shard, out in found])
        for shard, out in found:
            if shard is owner:
                return out.model_dump(mode="json")
        return None

    async def get_product(self, product_id: uuid.UUID) -> ProductOut:
        return ProductOut.model_validate_json(await self.product_json(product_id))

    async def list_products(self, filters: ProductFilter, sort: ProductSort,
                            cursor: str | None, limit: int) -> ProductPage:
        """One page, merged from every shard that can hold a match.

        Each shard returns its first ``limit + 1`` rows after the cursor in the same order;
        the page's rows are the first ``limit`` of their merge (the global first rows are
        among each shard's first rows), and a product seen on two shards — mid-move — is
        shown once, from the shard that owns its category.
        """
        after = decode_cursor(cursor, sort) if cursor else None
        if filters.categories:
            names = sorted({self.shards.shard_for(c) for c in filters.categories})
            shards = [await self.shards.shard(name) for name in names]
        else:
            shards = await self.shards.all()
        query = repo.listing_query(filters, sort, after, limit + 1)

        async def page(shard: Shard) -> list[Product]:
            async with shard.database.session() as session:
                return await repo.listed_products(session, query)

        results = await self.shards.fan_out(page, shards)
        chosen: dict[uuid.UUID, tuple[Shard, Product]] = {}
        for shard, products in results:
            for product in products:
                seen = chosen.get(product.id)
                if seen is None or shard.name == self.shards.shard_for(product.category):
                    chosen[product.id] = (shard, product)
        _, descending = repo.sort_expression(sort)
        merged = sorted((product for _, product in chosen.values()),
                        key=lambda p: (repo.sort_key(p, sort), p.id), reverse=descending)
        items = merged[:limit]
        more = len(merged) > limit or any(len(products) > limit for _, products in results)
        next_cursor = None
        if more and items:
            last = items[-1]
            next_cursor = encode_cursor(sort, repo.sort_key(last, sort), last.id)
        return ProductPage(items=[product_out(p) for p in items], next_cursor=next_cursor)

    # -- reading a variant by id ---------------------------------------------------------------

    async def get_variant(self, variant_id: uuid.UUID) -> VariantLookupOut:
        """A variant by its id alone, read from the database (not the product cache): a
        checkout re-validating its prices must see the price as it is now. A variant on two
        shards (its category mid-move) is read from the owner."""

        async def load(shard: Shard) -> Any:
            async with shard.database.session() as session:
                return await repo.load_variant(session, variant_id)

        found = [(shard, row) for shard, row in await self.shards.fan_out(load)
                 if row is not None]
        owner = self.shards.prefer_owner([(shard, row.category) for shard, row in found])
        row = next((row for shard, row in found if shard is owner), None)
        if row is None:
            raise NotFound(f"there is no variant {variant_id}", code="variant_not_found")
        return VariantLookupOut(
            id=row.id, sku=row.sku, name=row.name, attributes=row.attributes,
            price=Money(amount=row.price_amount, currency=row.currency),
            stock=Stock(on_hand=row.on_hand, reserved=row.reserved,
                        available=row.on_hand - row.reserved),
            product_id=row.product_id, product_name=row.product_name, category=row.category)

    # -- locating ----------------------------------------------------------------------------

    async def _holder(self, product_id: uuid.UUID) -> tuple[Shard, str]:
        """The shard that holds the product (its owner when it is on two), and its category."""

        async def category(shard: Shard) -> str | None:
            async with shard.database.session() as session:
                return await repo.product_category(session, product_id)

        found = [(shard, cat) for shard, cat in await self.shards.fan_out(category)
                 if cat is not None]
        owner = self.shards.prefer_owner(found)
        if owner is None:
            raise NotFound(f"there is no product {product_id}")
        return owner, next(cat for shard, cat in found if shard is owner)

    async def _locked_product(self, session: AsyncSession, product_id: uuid.UUID) -> Product:
        product = await repo.load_product(session, product_id, for_update=True)
        if product is None:  # deleted since we located it
            raise NotFound(f"there is no product {product_id}")
        return product

    # -- SKU claims --------------------------------------------------------------------------

    async def _claim(self, session: AsyncSession, product_id: uuid.UUID,
                     claims: Sequence[tuple[str, uuid.UUID]]) -> None:
        taken = await repo.claim_skus(session, product_id, claims)
        if taken:
            stale = await self._stale_claims(session, taken)
            if stale:
                await repo.drop_claims_on(session, stale)
                taken = (taken - stale) | await repo.claim_skus(
                    session, product_id, [c for c in claims if c[0] in stale])
        if taken:
            listed = ", ".join(sorted(taken))
            raise Conflict(f"SKU already in use: {listed}", code="sku_taken",
                           details={"skus": sorted(taken)})

    async def _stale_claims(self, session: AsyncSession, skus: set[str]) -> set[str]:
        cutoff = utcnow() - timedelta(seconds=self.settings.sku_claim_stale_seconds)
        stale: set[str] = set()
        for claim in await repo.sku_claims(session, skus):
            if claim.created_at > cutoff:
                continue

            async def exists(shard: Shard, variant_id: uuid.UUID = claim.variant_id) -> bool:
                async with shard.database.session() as other:
                    return await repo.variant_exists(other, variant_id)

            if not any(found for _, found in await self.shards.fan_out(exists)):
                log.warning("taking over stale claim of SKU %s (variant %s exists nowhere)",
                            claim.sku, claim.variant_id)
                stale.add(claim.sku)
        return stale

    async def _write_with_claims(
        self, shard: Shard, product_id: uuid.UUID, claims: Sequence[tuple[str, uuid.UUID]],
        write: Callable[[AsyncSession], Awaitable[T]],
    ) -> T:
        """Claim SKUs, then ``write`` on the shard; one transaction when the shard is the
        service's own database, else claim first and give the claims back if the write
        fails."""
        if shard.database is self.home:
            async with self.home.session() as session, session.begin():
                await self._claim(session, product_id, claims)
                return await write(session)
        async with self.home.session() as session, session.begin():
            await self._claim(session, product_id, claims)
        try:
            async with shard.database.session() as session, session.begin():
                return await write(session)
        except BaseException:
            await self._release_claims([variant_id for _, variant_id in claims])
            raise

    async def _release_claims(self, variant_ids: Sequence[uuid.UUID]) -> None:
        try:
            async with self.home.session() as session, session.begin():
                await repo.drop_sku_claims(session, variant_ids)
        except Exception:  # the takeover rule cleans up what this leaves
            log.exception("could not give back SKU claims of %s", variant_ids)

    # -- writing products --------------------------------------------------------------------

    @staticmethod
    def _new_variant(body: VariantIn, product_id: uuid.UUID, now: datetime,
                     position: int) -> Variant:
        return Variant(id=uuid.uuid4(), product_id=product_id, sku=body.sku, position=position,
                       name=body.name or body.sku, attributes=dict(body.attributes),
                       price_amount=body.price.amount, currency=body.price.currency,
                       on_hand=body.stock, reserved=0, created_at=now, updated_at=now)

    async def create_product(self, body: ProductIn) -> ProductOut:
        await self._require_category(body.category)
        shard = await self.shards.for_category(body.category)
        now = utcnow()
        product_id = uuid.uuid4()
        variants = [self._new_variant(v, product_id, now, i)
                    for i, v in enumerate(body.variants)]
        product = Product(id=product_id, category=body.category, name=body.name,
                          description=body.description, attributes=dict(body.attributes),
                          images=list(body.images), version=1, created_at=now,
                          updated_at=now, variants=variants)

        async def write(session: AsyncSession) -> ProductOut:
            repo.add_product(session, product)
            await repo.flush(session)
            out = product_out(product)
            await add_event(session, events.product_created(
                out, source=self.settings.service_name))
            return out

        out = await self._write_with_claims(shard, product_id,
                                            [(v.sku, v.id) for v in variants], write)
        # A lookup before it existed cached nothing, but may hold a fill lease: drop it.
        await self.invalidate([product_id])
        return out

    async def _change(self, product_id: uuid.UUID,
                      change: Callable[[AsyncSession, Product, datetime], Awaitable[None]],
                      ) -> ProductOut:
        """Apply ``change`` to the locked product, bump its version, publish
        ``product.updated`` (``change`` publishes anything more specific)."""
        shard, _ = await self._holder(product_id)
        async with shard.database.session() as session, session.begin():
            product = await self._locked_product(session, product_id)
            now = utcnow()
            await change(session, product, now)
            out = await self._bump(session, product, now)
        await self.invalidate([product_id])
        return out

    async def _bump(self, session: AsyncSession, product: Product, now: datetime) -> ProductOut:
        product.version += 1
        product.updated_at = now
        await repo.flush(session)
        out = product_out(product)
        await add_event(session, events.product_updated(out,
                                                        source=self.settings.service_name))
        return out

    async def update_product(self, product_id: uuid.UUID, patch: ProductPatch) -> ProductOut:
        if patch.category is not None:
            await self._require_category(patch.category)
            source, _ = await self._holder(product_id)
            target = await self.shards.for_category(patch.category)
            if target.database is not source.database:
                return await self._move(product_id, source, target, patch)

        async def change(_: AsyncSession, product: Product, __: datetime) -> None:
            _apply_patch(product, patch)

        return await self._change(product_id, change)

    async def _move(self, product_id: uuid.UUID, source: Shard, target: Shard,
                    patch: ProductPatch) -> ProductOut:
        """Move a product whose new category lives on another shard: copy it there, then
        delete it here, holding its rows locked throughout so no reservation slips in. A
        failure between the two commits leaves a copy on the old shard, which reads ignore
        (they prefer the shard that owns the category)."""
        async with source.database.session() as src, src.begin():
            product = await self._locked_product(src, product_id)
            variant_ids = [v.id for v in product.variants]
            await repo.lock_variants(src, variant_ids)
            if await repo.has_active_reservations(src, variant_ids):
                raise Conflict("the product has active reservations; they must be committed "
                               "or released before it can move to another shard",
                               code="product_has_reservations")
            now = utcnow()
            copy = Product(
                id=product.id, category=product.category, name=product.name,
                description=product.description, attributes=dict(product.attributes),
                images=list(product.images), version=product.version,
                created_at=product.created_at, updated_at=now,
                variants=[Variant(
                    id=v.id, product_id=v.product_id, sku=v.sku, name=v.name,
                    position=v.position,
                    attributes=dict(v.attributes), price_amount=v.price_amount,
                    currency=v.currency, on_hand=v.on_hand, reserved=v.reserved,
                    created_at=v.created_at, updated_at=now) for v in product.variants])
            _apply_patch(copy, patch)
            async with target.database.session() as dst, dst.begin():
                repo.add_product(dst, copy)
                out = await self._bump(dst, copy, now)
            await repo.delete_product(src, product)
        log.info("moved product %s from shard %s to %s", product_id, source.name, target.name)
        await self.invalidate([product_id])
        return out

    async def delete_product(self, product_id: uuid.UUID) -> None:
        shard, _ = await self._holder(product_id)
        same_database = shard.database is self.home
        async with shard.database.session() as session, session.begin():
            product = await self._locked_product(session, product_id)
            variant_ids = [v.id for v in product.variants]
            await repo.lock_variants(session, variant_ids)
            if await repo.has_active_reservations(session, variant_ids):
                raise Conflict("the product has active reservations; commit or release them "
                               "first", code="product_has_reservations")
            await add_event(session, events.product_deleted(
                product, source=self.settings.service_name))
            await repo.delete_product(session, product)
            if same_database:
                await repo.drop_sku_claims(session, variant_ids)
        if not same_database:
            await self._release_claims(variant_ids)
        await self.invalidate([product_id])

    # -- variants ----------------------------------------------------------------------------

    async def add_variant(self, product_id: uuid.UUID, body: VariantIn) -> ProductOut:
        shard, _ = await self._holder(product_id)
        variant = self._new_variant(body, product_id, utcnow(), 0)

        async def write(session: AsyncSession) -> ProductOut:
            product = await self._locked_product(session, product_id)
            if len(product.variants) >= 100:
                raise Conflict("a product has at most 100 variants", code="too_many_variants")
            variant.position = max(v.position for v in product.variants) + 1
            product.variants.append(variant)
            return await self._bump(session, product, variant.created_at)

        out = await self._write_with_claims(shard, product_id, [(variant.sku, variant.id)],
                                            write)
        await self.invalidate([product_id])
        return out

    async def update_variant(self, product_id: uuid.UUID, variant_id: uuid.UUID,
                             patch: VariantPatch) -> ProductOut:
        async def change(_: AsyncSession, product: Product, now: datetime) -> None:
            variant = _variant_of(product, variant_id)
            if patch.name is not None:
                variant.name = patch.name
            if patch.attributes is not None:
                variant.attributes = dict(patch.attributes)
            variant.updated_at = now

        return await self._change(product_id, change)

    async def delete_variant(self, product_id: uuid.UUID, variant_id: uuid.UUID) -> ProductOut:
        shard, _ = await self._holder(product_id)
        same_database = shard.database is self.home
        async with shard.database.session() as session, session.begin():
            product = await self._locked_product(session, product_id)
            variant = _variant_of(product, variant_id)
            if len(product.variants) == 1:
                raise Conflict("a product needs at least one variant; delete the product "
                               "instead", code="last_variant")
            await repo.lock_variants(session, [variant_id])
            if await repo.has_active_reservations(session, [variant_id]):
                raise Conflict(f"variant {variant.sku} has active reservations; commit or "
                               "release them first", code="variant_has_reservations")
            product.variants.remove(variant)
            if same_database:
                await repo.drop_sku_claims(session, [variant_id])
            out = await self._bump(session, product, utcnow())
        if not same_database:
            await self._release_claims([variant_id])
        await self.invalidate([product_id])
        return out

    async def set_price(self, product_id: uuid.UUID, variant_id: uuid.UUID,
                        price: PriceIn) -> ProductOut:
        async def change(session: AsyncSession, product: Product, now: datetime) -> None:
            variant = _variant_of(product, variant_id)
            old = {"amount": variant.price_amount, "currency": variant.currency}
            new = {"amount": price.amount, "currency": price.currency}
            if old == new:
                return
            variant.price_amount, variant.currency = price.amount, price.currency
            variant.updated_at = now
            await add_event(session, events.price_changed(
                product_id, variant_id, variant.sku, old, new, changed_at=now,
                source=self.settings.service_name))

        return await self._change(product_id, change)

    async def update_stock(self, product_id: uuid.UUID, variant_id: uuid.UUID,
                           body: StockUpdate) -> ProductOut:
        """Count or adjust stock on hand. Reservations are not touched, so on-hand cannot go
        below what they hold (409 says how much that is)."""
        shard, _ = await self._holder(product_id)
        async with shard.database.session() as session, session.begin():
            owner = await repo.variant_owner(session, variant_id)
            if owner != product_id:
                raise NotFound(f"product {product_id} has no variant {variant_id}")
            row = await repo.set_on_hand(session, variant_id, on_hand=body.on_hand,
                                         delta=body.delta, now=utcnow())
            if row is None:
                [current] = await repo.stock_of(session, [variant_id])
                raise Conflict(
                    f"on hand cannot go below the {current.reserved} unit(s) reserved "
                    f"(now {current.on_hand} on hand)", code="stock_below_reserved",
                    details={"on_hand": current.on_hand, "reserved": current.reserved})
            await add_event(session, events.stock_changed(
                row, reason=body.reason, source=self.settings.service_name))
        await self.invalidate([product_id])
        return await self.get_product(product_id)


def _apply_patch(product: Product, patch: ProductPatch) -> None:
    if patch.category is not None:
        product.category = patch.category
    if patch.name is not None:
        product.name = patch.name
    if patch.description is not None:
        product.description = patch.description
    if patch.attributes is not None:
        product.attributes = dict(patch.attributes)
    if patch.images is not None:
        product.images = list(patch.images)


def _variant_of(product: Product, variant_id: uuid.UUID) -> Variant:
    for variant in product.variants:
        if variant.id == variant_id:
            return variant
    raise NotFound(f"product {product.id} has no variant {variant_id}")
