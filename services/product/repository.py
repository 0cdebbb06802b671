"""Where products live and how they are queried: the shard router and the SQL behind it.

Routing follows the ShardLayout's shard map (``runtime.shard_map``): a category's products
are in the database of the shard the map names, so every query that knows its category goes
to one shard, and the rest (a product by id, a listing across categories) fans out to all
shards at once and merges. Engines are opened lazily, one per shard database; when the map
is hot-reloaded, a shard whose database changed (or that left the map) is retired after a
grace period, so requests in flight finish and its outbox drains, and the next query opens
the new database. Without a shard map the service's own database is the only shard.

Each shard database carries the service's whole schema (migrated when first opened) and its
own outbox, relayed by a relay of its own: an event must commit in the same transaction as
the row it describes, and that row is on the shard.

Stock is only ever changed by conditional ``UPDATE … WHERE on_hand - reserved >= :qty`` (or
the like) statements, which PostgreSQL evaluates under the row lock, so concurrent
reservations can never take more than there is; the table's check constraint backs that up.
Statements that touch several variants lock them in id order first, so two of them cannot
deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from services.core import migrations as core_migrations
from services.core.db import Database, create_engine
from services.core.errors import ServiceUnavailable
from services.core.events.bus import EventBus
from services.core.events.outbox import OutboxRelay
from services.core.shardmap import ShardMap, ShardMapWatcher
from services.product.models import (
    MIGRATIONS,
    Base,
    Category,
    Product,
    Reservation,
    ReservationLine,
    SkuClaim,
    Variant,
)
from services.product.schemas import ProductSort
from services.product.settings import ProductSettings

#: A row of the columns a statement names (SQLAlchemy types a row by its width).
AnyRow: TypeAlias = "Row[*tuple[Any, ...]]"


def _table(model: type[Base]) -> Table:
    """The model's table, as the ``Table`` it is (``__table__`` is typed ``FromClause``)."""
    return Base.metadata.tables[model.__tablename__]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The one shard's name when no shard map is configured.
LOCAL_SHARD = "local"


@dataclass(frozen=True)
class Shard:
    name: str
    database: Database


@dataclass
class _OpenShard:
    shard: Shard
    dsn: str
    relay: OutboxRelay | None = None
    relay_task: asyncio.Task[None] | None = None
    owns_engine: bool = True


@dataclass
class ShardRouter:
    """The shard databases of the catalog, opened on demand and following the shard map."""

    home: Database
    settings: ProductSettings
    shard_map: ShardMapWatcher | None = None
    bus: EventBus | None = None
    _open: dict[str, _OpenShard] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _retiring: set[asyncio.Task[None]] = field(default_factory=set)
    _migrating: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def sharded(self) -> bool:
        return self.shard_map is not None

    @property
    def map_version(self) -> str | None:
        return self.shard_map.value.version if self.shard_map is not None else None

    @property
    def open_shards(self) -> list[str]:
        """Shards with an engine open now (for ``/ready`` and tests)."""
        return sorted(self._open)

    @property
    def retiring(self) -> int:
        """Shards dropped by a reload whose engines are still draining."""
        return len(self._retiring)

    def shard_names(self) -> list[str]:
        if self.shard_map is None:
            return [LOCAL_SHARD]
        return self.shard_map.value.shard_names

    def shard_for(self, category: str) -> str:
        """The shard that holds ``category``'s products under the map in force."""
        if self.shard_map is None:
            return LOCAL_SHARD
        return self.shard_map.shard_for(category)

    async def start(self) -> None:
        """Open (and migrate) every shard of the map now, so the first requests do not pay
        for it and a shard that cannot be reached shows at start-up; then follow reloads."""
        if self.shard_map is None:
            return
        self.shard_map.subscribe(self._on_new_map)
        await self.all()

    async def for_category(self, category: str) -> Shard:
        return await self.shard(self.shard_for(category))

    async def all(self) -> list[Shard]:
        """Every shard of the map in force (opened as needed)."""
        return list(await asyncio.gather(*(self.shard(name) for name in self.shard_names())))

    async def shard(self, name: str) -> Shard:
        opened = self._open.get(name)
        if opened is not None:
            return opened.shard
        if self.shard_map is None:
            return Shard(LOCAL_SHARD, self.home)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            opened = self._open.get(name)
            if opened is None:
                opened = await self._open_shard(name, self.shard_map.value)
                self._open[name] = opened
        return opened.shard

    async def _open_shard(self, name: str, shard_map: ShardMap) -> _OpenShard:
        try:
            dsn = shard_map.dsn_for(name, self._secrets_dir())
        except (KeyError, LookupError) as exc:
            raise ServiceUnavailable(f"the database of shard {name!r} is not configured: {exc}",
                                     code="shard_unavailable") from exc
        if dsn == self.settings.database_url:
            return _OpenShard(Shard(name, self.home), dsn, owns_engine=False)
        settings = self.settings
        database = Database(create_engine(
            dsn, settings.schema_name, pool_size=settings.shard_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout_seconds,
            statement_timeout_ms=settings.database_statement_timeout_ms,
        ), settings.schema_name)
        try:
            if settings.migrate_on_startup:
                # One at a time: Alembic's ``op``/``context`` are process-wide proxies, so two
                # migrations interleaved on the event loop corrupt each other.
                async with self._migrating:
                    await core_migrations.upgrade(database, MIGRATIONS)
        except Exception as exc:
            await database.dispose()
            log.error("shard %s could not be opened: %r", name, exc)
            raise ServiceUnavailable(f"shard {name!r} cannot be reached; retry shortly",
                                     code="shard_unavailable",
                                     headers={"Retry-After": "1"}) from exc
        opened = _OpenShard(Shard(name, database), dsn)
        if self.bus is not None and settings.outbox_enabled:
            opened.relay = OutboxRelay(database, self.bus, batch_size=settings.outbox_batch_size,
                                       poll_interval=settings.outbox_poll_interval_seconds)
            opened.relay_task = asyncio.create_task(opened.relay.run(),
                                                    name=f"outbox-relay:{name}")
        log.info("opened shard %s", name)
        return opened

    def _secrets_dir(self) -> Path:
        return self.shard_map.secrets_dir if self.shard_map else self.settings.secrets_dir

    def _on_new_map(self, new: ShardMap) -> None:
        """Retire every open shard whose database the new map changes or drops."""
        secrets_dir = self._secrets_dir()
        for name, opened in list(self._open.items()):
            dsn: str | None = None
            if name in new.shard_names:
                with contextlib.suppress(LookupError):
                    dsn = new.dsn_for(name, secrets_dir)
            if dsn != opened.dsn:
                del self._open[name]
                task = asyncio.create_task(self._retire(name, opened,
                                                        self.settings.shard_retire_grace_seconds))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        log.info("shard map %s in force: shards %s", new.version, ", ".join(new.shard_names))

    async def _retire(self, name: str, opened: _OpenShard, grace: float) -> None:
        try:
            await asyncio.sleep(grace)
            if opened.relay is not None and opened.relay_task is not None:
                opened.relay.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(opened.relay_task, timeout=10)
        finally:  # also when the service stops during the grace period
            if opened.relay is not None:
                opened.relay.stop()
            if opened.relay_task is not None:
                opened.relay_task.cancel()
            if opened.owns_engine:
                await opened.shard.database.dispose()
            log.info("retired shard %s", name)

    async def ping(self) -> None:
        """Every shard answers (for ``/ready``)."""
        shards = await self.all()
        await asyncio.gather(*(s.database.ping() for s in shards
                               if s.database is not self.home))

    async def close(self) -> None:
        retiring = list(self._retiring)
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        opened, self._open = list(self._open.values()), {}
        for item in opened:
            if item.relay is not None:
                item.relay.stop()
        tasks = [item.relay_task for item in opened if item.relay_task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
        for item in opened:
            if item.owns_engine:
                await item.shard.database.dispose()

    async def fan_out(self, query: Callable[[Shard], Awaitable[T]],
                      shards: Iterable[Shard] | None = None) -> list[tuple[Shard, T]]:
        """Run ``query`` on every shard (or ``shards``) concurrently."""
        targets = list(shards) if shards is not None else await self.all()
        results = await asyncio.gather(*(query(shard) for shard in targets))
        return list(zip(targets, results, strict=True))

    def prefer_owner(self, found: Sequence[tuple[Shard, str]]) -> Shard | None:
        """Of the shards a row was found on (with its category), the one the map says owns
        it — a row can be on two shards while the operator moves its category."""
        if not found:
            return None
        for shard, category in found:
            if shard.name == self.shard_for(category):
                return shard
        return found[0][0]


# -- categories (the service's own database) -----------------------------------------------


async def categories(session: AsyncSession) -> list[Category]:
    return list(await session.scalars(select(Category).order_by(Category.slug)))


async def category(session: AsyncSession, slug: str, *,
                   for_update: bool = False) -> Category | None:
    return await session.get(Category, slug, with_for_update=for_update)


def add_category(session: AsyncSession, new: Category) -> None:
    session.add(new)


async def a_subcategory(session: AsyncSession, slug: str) -> str | None:
    """The slug of one category whose parent is ``slug``, if there is any: enough to
    refuse deleting it, and to name an example in the refusal."""
    return await session.scalar(
        select(Category.slug).where(Category.parent_slug == slug).limit(1))


async def delete_category(session: AsyncSession, gone: Category) -> None:
    await session.delete(gone)


# -- products --------------------------------------------------------------------------------


async def load_product(session: AsyncSession, product_id: uuid.UUID, *,
                       for_update: bool = False) -> Product | None:
    """The product with its variants: one joined query for a read; locked, the product row
    and then its variants (PostgreSQL cannot lock the nullable side of an outer join)."""
    if not for_update:
        query = (select(Product).where(Product.id == product_id)
                 .options(joinedload(Product.variants)))
        return (await session.scalars(query)).unique().first()
    query = (select(Product).where(Product.id == product_id)
             .options(selectinload(Product.variants)).with_for_update())
    return (await session.scalars(query)).first()


async def listed_products(session: AsyncSession,
                          query: Select[Product]) -> list[Product]:
    """Run a :func:`listing_query` on one shard; the query is built once per listing and
    sent to every shard it concerns."""
    return list(await session.scalars(query))


def add_product(session: AsyncSession, new: Product) -> None:
    """``new`` and its variants are inserted at the next flush, with the transaction."""
    session.add(new)


async def flush(session: AsyncSession) -> None:
    """Send the session's pending changes now, inside the caller's transaction, so the
    event published next describes rows as written and a broken constraint fails here."""
    await session.flush()


async def delete_product(session: AsyncSession, gone: Product) -> None:
    """Delete the product with its variants."""
    await session.delete(gone)


async def product_category(session: AsyncSession, product_id: uuid.UUID) -> str | None:
    return await session.scalar(select(Product.category).where(Product.id == product_id))


async def lock_variants(session: AsyncSession, variant_ids: Iterable[uuid.UUID]) -> None:
    """Row-lock variants in id order, the one order every multi-variant change uses."""
    ids = sorted(set(variant_ids))
    if ids:
        await session.execute(select(Variant.id).where(Variant.id.in_(ids))
                              .order_by(Variant.id).with_for_update())


async def has_active_reservations(session: AsyncSession,
                                  variant_ids: Iterable[uuid.UUID]) -> bool:
    ids = list(variant_ids)
    if not ids:
        return False
    return bool(await session.scalar(select(exists().where(
        ReservationLine.variant_id.in_(ids),
        ReservationLine.reservation_id == Reservation.id,
        Reservation.status == "active",
    ))))


async def category_in_use(session: AsyncSession, category: str) -> bool:
    return bool(await session.scalar(select(exists().where(Product.category == category))))


@dataclass(frozen=True)
class ProductFilter:
    """A listing's filters; every one narrows (they are ANDed)."""

    categories: tuple[str, ...] = ()
    min_price: int | None = None
    max_price: int | None = None
    currency: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    q: str | None = None
    in_stock: bool = False


def _min_price() -> Any:
    return (select(func.coalesce(func.min(Variant.price_amount), 0))
            .where(Variant.product_id == Product.id).scalar_subquery())


def sort_expression(sort: ProductSort) -> tuple[Any, bool]:
    """The column a listing sorts by, and whether it is descending. Names sort by code
    point (collation "C"), the order Python's ``str`` comparison uses when pages from several
    shards are merged."""
    return {
        ProductSort.NEWEST: (Product.created_at, True),
        ProductSort.OLDEST: (Product.created_at, False),
        ProductSort.NAME: (Product.name.collate("C"), False),
        ProductSort.PRICE_ASC: (_min_price(), False),
        ProductSort.PRICE_DESC: (_min_price(), True),
    }[sort]


def sort_key(product: Product, sort: ProductSort) -> Any:
    """The value ``sort_expression`` has for a loaded product."""
    if sort in (ProductSort.NEWEST, ProductSort.OLDEST):
        return product.created_at
    if sort is ProductSort.NAME:
        return product.name
    return min((v.price_amount for v in product.variants), default=0)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _variant_matches(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists().where(Variant.product_id == Product.id, *conditions)


def listing_query(filters: ProductFilter, sort: ProductSort,
                  after: tuple[Any, uuid.UUID] | None, limit: int) -> Select[Product]:
    """One shard's page: ``limit`` products after the keyset ``after``, variants loaded."""
    expression, descending = sort_expression(sort)
    query = select(Product).options(selectinload(Product.variants))
    conditions: list[ColumnElement[bool]] = []
    if filters.categories:
        conditions.append(Product.category.in_(filters.categories))
    if filters.q:
        conditions.append(Product.name.ilike(f"%{_escape_like(filters.q)}%", escape="\\"))
    price: list[ColumnElement[bool]] = []
    if filters.min_price is not None:
        price.append(Variant.price_amount >= filters.min_price)
    if filters.max_price is not None:
        price.append(Variant.price_amount <= filters.max_price)
    if filters.currency is not None:
        price.append(Variant.currency == filters.currency)
    if price:
        conditions.append(_variant_matches(*price))
    if filters.in_stock:
        conditions.append(_variant_matches(Variant.on_hand - Variant.reserved > 0))
    for name, value in filters.attributes:
        wanted = {name: value}
        conditions.append(or_(Product.attributes.contains(wanted),
                              _variant_matches(Variant.attributes.contains(wanted))))
    if after is not None:
        key = tuple_(expression, Product.id)
        bound = tuple_(*after)
        conditions.append(key < bound if descending else key > bound)
    if conditions:
        query = query.where(and_(*conditions))
    if descending:
        query = query.order_by(expression.desc(), Product.id.desc())
    else:
        query = query.order_by(expression.asc(), Product.id.asc())
    return query.limit(limit)


# -- SKU claims (the service's own database) -------------------------------------------------


async def claim_skus(session: AsyncSession, product_id: uuid.UUID,
                     claims: Sequence[tuple[str, uuid.UUID]]) -> set[str]:
    """Claim ``(sku, variant_id)`` pairs; returns the SKUs someone else holds."""
    if not claims:
        return set()
    taken = await session.scalars(
        insert(SkuClaim)
        .values([{"sku": sku, "product_id": product_id, "variant_id": variant_id}
                 for sku, variant_id in claims])
        .on_conflict_do_nothing()
        .returning(SkuClaim.sku))
    return {sku for sku, _ in claims} - set(taken)


async def sku_claims(session: AsyncSession, skus: Iterable[str]) -> list[SkuClaim]:
    return list(await session.scalars(select(SkuClaim).where(SkuClaim.sku.in_(list(skus)))))


async def drop_sku_claims(session: AsyncSession, variant_ids: Iterable[uuid.UUID]) -> None:
    ids = list(variant_ids)
    if ids:
        await session.execute(_table(SkuClaim).delete().where(SkuClaim.variant_id.in_(ids)))


async def drop_claims_on(session: AsyncSession, skus: Collection[str]) -> None:
    """Drop the claims on ``skus`` whoever holds them: stale claims being taken over."""
    await session.execute(_table(SkuClaim).delete().where(SkuClaim.sku.in_(skus)))


async def variant_owner(session: AsyncSession, variant_id: uuid.UUID) -> uuid.UUID | None:
    """The id of the product the variant belongs to, on this shard."""
    return await session.scalar(select(Variant.product_id).where(Variant.id == variant_id))


async def variant_exists(session: AsyncSession, variant_id: uuid.UUID) -> bool:
    return bool(await session.scalar(select(exists().where(Variant.id == variant_id))))


async def load_variant(session: AsyncSession, variant_id: uuid.UUID) -> AnyRow | None:
    """One variant's columns with its product's id, name and category: a primary-key read
    and its join, for pricing a line known only by variant id."""
    return (await session.execute(_LOAD_VARIANT, {"variant_id": variant_id})).first()


# -- stock -----------------------------------------------------------------------------------
#
# The statements on the reservation path are built once, on the tables rather than the
# mapped classes: they run on every checkout, and building a statement (and, for ORM-enabled
# DML, reconciling the session with it) costs more CPU than PostgreSQL spends running it.

_variants = _table(Variant)
_reservations = _table(Reservation)
_STOCK_COLUMNS = (_variants.c.id, _variants.c.product_id, _variants.c.sku,
                  _variants.c.on_hand, _variants.c.reserved)

_TAKE_STOCK = (
    update(_variants)
    .where(_variants.c.id == bindparam("variant_id"),
           _variants.c.on_hand - _variants.c.reserved >= bindparam("quantity"))
    .values(reserved=_variants.c.reserved + bindparam("quantity"), updated_at=bindparam("now"))
    .returning(*_STOCK_COLUMNS))
_GIVE_BACK = (
    update(_variants).where(_variants.c.id == bindparam("variant_id"))
    .values(reserved=_variants.c.reserved - bindparam("quantity"), updated_at=bindparam("now"))
    .returning(*_STOCK_COLUMNS))
_SHIP = (
    update(_variants).where(_variants.c.id == bindparam("variant_id"))
    .values(reserved=_variants.c.reserved - bindparam("quantity"),
            on_hand=_variants.c.on_hand - bindparam("quantity"), updated_at=bindparam("now"))
    .returning(*_STOCK_COLUMNS))
_INSERT_RESERVATION = (
    insert(_reservations)
    .values(id=bindparam("id"), owner=bindparam("owner"), status="active",
            expires_at=bindparam("expires_at"), created_at=bindparam("now"),
            updated_at=bindparam("now"))
    .on_conflict_do_nothing()
    .returning(_reservations.c.id))
_INSERT_LINES = insert(_table(ReservationLine))
_LOAD_VARIANT = (
    select(_variants.c.id, _variants.c.sku, _variants.c.name, _variants.c.attributes,
           _variants.c.price_amount, _variants.c.currency, _variants.c.on_hand,
           _variants.c.reserved, _variants.c.product_id,
           _table(Product).c.name.label("product_name"), _table(Product).c.category)
    .join(_table(Product), _table(Product).c.id == _variants.c.product_id)
    .where(_variants.c.id == bindparam("variant_id")))
_LOCATE_VARIANTS = (
    select(_variants.c.id, _variants.c.product_id, _variants.c.sku, Product.category)
    .join(_table(Product), _table(Product).c.id == _variants.c.product_id)
    .where(_variants.c.id.in_(bindparam("ids", expanding=True))))


async def take_stock(session: AsyncSession, variant_id: uuid.UUID,
                     quantity: int, now: datetime) -> AnyRow | None:
    """Reserve ``quantity`` if that many are available; None when not (or no variant)."""
    result = await session.execute(_TAKE_STOCK, {"variant_id": variant_id,
                                                 "quantity": quantity, "now": now})
    return result.first()


async def stock_of(session: AsyncSession, variant_ids: Iterable[uuid.UUID]) -> list[AnyRow]:
    return list((await session.execute(
        select(*_STOCK_COLUMNS).where(_variants.c.id.in_(list(variant_ids))))).all())


async def settle_lines(session: AsyncSession, lines: Sequence[ReservationLine], *,
                       ship: bool, now: datetime) -> list[AnyRow]:
    """Give back the reserved units of ``lines``; with ``ship`` they also leave on-hand (a
    committed sale). Variants are locked in id order before they are changed."""
    await lock_variants(session, (line.variant_id for line in lines))
    changed: list[AnyRow] = []
    for line in sorted(lines, key=lambda line: line.variant_id):
        row = (await session.execute(_SHIP if ship else _GIVE_BACK, {
            "variant_id": line.variant_id, "quantity": line.quantity, "now": now})).first()
        if row is not None:  # a variant retired meanwhile holds nothing to give back
            changed.append(row)
    return changed


async def set_on_hand(session: AsyncSession, variant_id: uuid.UUID, *,
                      on_hand: int | None, delta: int | None, now: datetime) -> AnyRow | None:
    """Set or adjust on-hand, never below what is reserved; None when that would happen."""
    new_value: Any = on_hand if on_hand is not None else _variants.c.on_hand + (delta or 0)
    result = await session.execute(
        update(_variants)
        .where(_variants.c.id == variant_id, _variants.c.reserved <= new_value)
        .values(on_hand=new_value, updated_at=now)
        .returning(*_STOCK_COLUMNS))
    return result.first()


# -- reservations ----------------------------------------------------------------------------


async def load_reservation(session: AsyncSession, reservation_id: uuid.UUID, *,
                           for_update: bool = False) -> Reservation | None:
    query = (select(Reservation).where(Reservation.id == reservation_id)
             .options(selectinload(Reservation.lines)))
    if for_update:
        query = query.with_for_update()
    return (await session.scalars(query)).first()


async def delete_reservation(session: AsyncSession, gone: Reservation) -> None:
    """Delete the reservation with its lines (rather than mark it released), so the
    reservation id is free again for the caller's retry."""
    await session.delete(gone)


async def insert_reservation(session: AsyncSession, reservation_id: uuid.UUID, owner: str,
                             expires_at: datetime, now: datetime) -> bool:
    """Create the reservation row; False when the id exists (a retry or a racing twin,
    whose transaction this one waited for)."""
    created = await session.scalar(_INSERT_RESERVATION, {
        "id": reservation_id, "owner": owner, "expires_at": expires_at, "now": now})
    return created is not None


async def insert_lines(session: AsyncSession, lines: Sequence[dict[str, Any]]) -> None:
    await session.execute(_INSERT_LINES, list(lines))


async def expired_reservations(session: AsyncSession, now: datetime,
                               limit: int) -> list[Reservation]:
    """Active reservations past their time, locked; ones another sweeper (or a commit)
    holds are skipped, not waited for."""
    return list(await session.scalars(
        select(Reservation)
        .where(Reservation.status == "active", Reservation.expires_at <= now)
        .order_by(Reservation.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .options(selectinload(Reservation.lines))))


async def locate_variants(session: AsyncSession,
                          variant_ids: Iterable[uuid.UUID]) -> list[AnyRow]:
    """``(id, product_id, sku, category)`` of the variants present on a shard."""
    return list((await session.execute(_LOCATE_VARIANTS, {"ids": list(variant_ids)})).all())
