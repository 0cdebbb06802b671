"""Reservations: stock held for a checkout, then committed (sold) or released.

The rules that keep stock honest:

* **Only the checkout holds stock.** Reserving, committing and releasing are internal to
  the order saga: the routes admit the service identity alone (shoppers see stock, they do
  not hold it; a shopper who could would empty the shelf with no order), a reservation is
  settled only by the service that made it, and a hold lasts at most
  ``reservation_max_ttl_seconds`` (minutes, not days).
* **Never oversell.** A line is reserved by one conditional ``UPDATE … SET reserved =
  reserved + q WHERE on_hand - reserved >= q``; PostgreSQL re-checks the condition under the
  row lock, so of any number of concurrent requests only as many succeed as there are
  units. The table's check constraint (``reserved <= on_hand``) would refuse anything else.
* **All or nothing.** Every line of a reservation on one shard is reserved in one
  transaction; if any is short, none is, and the 409 names each short SKU with what is
  available. A reservation spanning shards reserves shard by shard and undoes the shards
  already done when a later one is short.
* **Idempotent by id.** The caller picks the id (its checkout's). Repeating ``reserve``
  returns the reservation already made; ``commit`` and ``release`` of one already in that
  state answer as if they had just done it.
* **Holds end.** A reservation has an expiry; a sweeper (in every replica; rows are taken
  with ``SKIP LOCKED``) releases expired ones and marks them ``expired``. Until the sweeper
  has done so a late ``commit`` still succeeds: the stock is still held, so selling it
  oversells nothing, and a checkout whose payment went through is not failed for being
  slow. After it, ``commit`` is a 409 ``reservation_expired``, which the saga takes as a
  failed step: it cancels the shipment, refunds the payment and cancels the order.

Every transition publishes ``inventory.*`` and ``stock.changed`` through the shard's outbox
and drops the cached documents of the products involved after it commits.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from services.core.auth import Principal
from services.core.errors import Conflict, NotFound, Unprocessable
from services.core.events.envelope import EventEnvelope
from services.core.events.outbox import add_event
from services.core.transient import is_transient
from services.product import events
from services.product import repository as repo
from services.product.models import Reservation
from services.product.repository import LOCAL_SHARD, Shard, ShardRouter
from services.product.schemas import ReservationIn, ReservationLineOut, ReservationOut
from services.product.service import CatalogService, utcnow
from services.product.settings import ProductSettings

log = logging.getLogger(__name__)


class InsufficientStock(Conflict):
    code = "insufficient_stock"


@dataclass(frozen=True)
class _Line:
    variant_id: uuid.UUID
    product_id: uuid.UUID
    sku: str
    quantity: int


def reservation_out(parts: Sequence[Reservation]) -> ReservationOut:
    """One reservation from its parts on every shard. The parts move together; should they
    ever disagree (a crash between shards), an active part makes the whole active, so the
    caller commits or releases it."""
    statuses = {part.status for part in parts}
    status = next(s for s in ("active", "committed", "released", "expired") if s in statuses)
    return ReservationOut(
        id=parts[0].id, status=status, owner=parts[0].owner,
        expires_at=min(p.expires_at for p in parts),
        created_at=min(p.created_at for p in parts),
        updated_at=max(p.updated_at for p in parts),
        lines=sorted((ReservationLineOut(variant_id=line.variant_id,
                                         product_id=line.product_id, sku=line.sku,
                                         quantity=line.quantity)
                      for part in parts for line in part.lines), key=lambda line: line.sku),
    )


class InventoryService:
    def __init__(self, shards: ShardRouter, catalog: CatalogService,
                 settings: ProductSettings) -> None:
        """``settings.service_name`` is the source of the events reservations publish."""
        self.shards = shards
        self.catalog = catalog
        self.settings = settings

    # -- reading -----------------------------------------------------------------------------

    async def _parts(self, reservation_id: uuid.UUID) -> list[tuple[Shard, Reservation]]:
        async def load(shard: Shard) -> Reservation | None:
            async with shard.database.session() as session:
                return await repo.load_reservation(session, reservation_id)

        return [(shard, part) for shard, part in await self.shards.fan_out(load)
                if part is not None]

    @staticmethod
    def _visible(parts: Sequence[Reservation], principal: Principal, *,
                 admin_may: bool = True) -> None:
        """Only the service that made a reservation sees or settles it (an admin may look
        at it); to anyone else it does not exist."""
        if parts[0].owner != principal.user_id and not (admin_may
                                                        and principal.has_role("admin")):
            raise NotFound(f"there is no reservation {parts[0].id}")

    async def get(self, reservation_id: uuid.UUID, principal: Principal) -> ReservationOut:
        parts = [part for _, part in await self._parts(reservation_id)]
        if not parts:
            raise NotFound(f"there is no reservation {reservation_id}")
        self._visible(parts, principal)
        return reservation_out(parts)

    # -- reserve -----------------------------------------------------------------------------

    async def reserve(self, principal: Principal,
                      body: ReservationIn) -> tuple[ReservationOut, bool]:
        """Hold the lines' stock; returns the reservation and whether it is new.

        Without shards this is one transaction. With shards the variants are first located
        (one query per shard, at once), then each shard's lines are reserved in its own
        transaction, in shard-name order; a shard that is short undoes the ones before it.
        """
        ttl = body.ttl_seconds or self.settings.reservation_default_ttl_seconds
        longest = self.settings.reservation_max_ttl_seconds
        if ttl > longest:
            raise Unprocessable(f"ttl_seconds may be at most {longest} (a reservation holds "
                                f"stock only while a checkout runs), not {ttl}",
                                code="ttl_too_long",
                                details={"ttl_seconds": ttl, "max_ttl_seconds": longest})
        wanted = {line.variant_id: line.quantity for line in body.lines}
        if self.shards.sharded:
            by_shard, missing = await self._locate(wanted)
            if missing:
                parts = [part for _, part in await self._parts(body.id)]
                if parts:  # a retry, after a variant it holds was retired
                    return self._replay(parts, principal, body), False
                self._unknown(missing)
        else:
            by_shard = {LOCAL_SHARD: (await self.shards.shard(LOCAL_SHARD), wanted)}
        now = utcnow()
        expires_at = now + timedelta(seconds=ttl)
        done: list[Shard] = []
        lines: list[_Line] = []
        twin = False
        try:
            for name in sorted(by_shard):
                shard, quantities = by_shard[name]
                reserved = await self._reserve_on(shard, body.id, principal.user_id,
                                                  quantities, now, expires_at)
                if reserved is None:
                    twin = True
                    break
                done.append(shard)
                lines += reserved
        except BaseException:
            await asyncio.shield(self._abort_all(done, body.id))
            raise
        finally:
            await self.catalog.invalidate({line.product_id for line in lines})
        if twin:  # a retry (or its racing twin): answer with what the first one made
            await asyncio.shield(self._abort_all(done, body.id))
            parts = [part for _, part in await self._parts(body.id)]
            return self._replay(parts, principal, body), False
        return ReservationOut(
            id=body.id, status="active", owner=principal.user_id, expires_at=expires_at,
            created_at=now, updated_at=now,
            lines=sorted((ReservationLineOut(variant_id=line.variant_id,
                                             product_id=line.product_id, sku=line.sku,
                                             quantity=line.quantity) for line in lines),
                         key=lambda line: line.sku)), True

    def _replay(self, parts: Sequence[Reservation], principal: Principal,
                body: ReservationIn) -> ReservationOut:
        if not parts:  # the twin that made it failed and was undone meanwhile
            raise Conflict(f"reservation {body.id} is being made by another request; retry",
                           code="reservation_in_progress")
        if parts[0].owner != principal.user_id:
            raise Conflict(f"reservation id {body.id} is taken; choose another",
                           code="reservation_id_taken")
        held = {line.variant_id: line.quantity for part in parts for line in part.lines}
        asked = {line.variant_id: line.quantity for line in body.lines}
        if held != asked:
            raise Conflict(f"reservation {body.id} exists with other lines; a retry must send "
                           "the same lines, a new checkout a new id",
                           code="reservation_id_reused")
        return reservation_out(parts)

    async def _locate(self, wanted: dict[uuid.UUID, int],
                      ) -> tuple[dict[str, tuple[Shard, dict[uuid.UUID, int]]],
                                 list[uuid.UUID]]:
        """Group the wanted quantities by the shard that holds each variant; and the
        variants no shard holds."""

        async def find(shard: Shard) -> list[Any]:
            async with shard.database.session() as session:
                return await repo.locate_variants(session, wanted)

        candidates: dict[uuid.UUID, list[tuple[Shard, Any]]] = {}
        for shard, rows in await self.shards.fan_out(find):
            for row in rows:
                candidates.setdefault(row.id, []).append((shard, row))
        grouped: dict[str, tuple[Shard, dict[uuid.UUID, int]]] = {}
        for variant_id, found in candidates.items():
            owner = self.shards.prefer_owner([(shard, row.category) for shard, row in found])
            assert owner is not None
            grouped.setdefault(owner.name, (owner, {}))[1][variant_id] = wanted[variant_id]
        return grouped, [v for v in wanted if v not in candidates]

    @staticmethod
    def _unknown(variant_ids: Sequence[uuid.UUID]) -> None:
        missing = sorted(str(v) for v in variant_ids)
        raise Unprocessable(f"no such variant: {', '.join(missing)}", code="unknown_variant",
                            details={"variant_ids": missing})

    async def _reserve_on(self, shard: Shard, reservation_id: uuid.UUID, owner: str,
                          wanted: dict[uuid.UUID, int], now: datetime,
                          expires_at: datetime) -> list[_Line] | None:
        """Reserve this shard's lines in one transaction; the lines, or None when the id
        is already taken here (a retry, or a concurrent twin this waited for).

        Everything that needs no lock is written first; the variant rows are locked last
        (in id order) and held only for the stock events and the commit.
        """
        async with shard.database.session() as session, session.begin():
            if not await repo.insert_reservation(session, reservation_id, owner, expires_at,
                                                 now):
                return None
            located = {row.id: row for row in await repo.locate_variants(session, wanted)}
            missing = [v for v in wanted if v not in located]
            if missing:
                self._unknown(missing)
            lines = [_Line(variant_id, located[variant_id].product_id,
                           located[variant_id].sku, quantity)
                     for variant_id, quantity in sorted(wanted.items())]
            await repo.insert_lines(session, [
                {"reservation_id": reservation_id, "variant_id": line.variant_id,
                 "product_id": line.product_id, "sku": line.sku, "quantity": line.quantity}
                for line in lines])
            await add_event(session, events.inventory_reserved(
                reservation_id, lines, owner=owner, expires_at=expires_at,
                source=self.settings.service_name))
            taken: list[Any] = []
            short: list[_Line] = []
            for line in lines:
                row = await repo.take_stock(session, line.variant_id, line.quantity, now)
                if row is None:
                    short.append(line)
                else:
                    taken.append(row)
            if short:
                await self._refuse(session, short)
            for row in taken:
                await add_event(session, events.stock_changed(
                    row, source=self.settings.service_name))
        return lines

    async def _abort_all(self, shards: Sequence[Shard], reservation_id: uuid.UUID) -> None:
        for shard in shards:
            await self._abort_on(shard, reservation_id)

    @staticmethod
    async def _refuse(session: AsyncSession, short: list[_Line]) -> None:
        current = {row.id: row for row in await repo.stock_of(
            session, [line.variant_id for line in short])}
        details = []
        for line in short:
            row = current.get(line.variant_id)
            available = 0 if row is None else row.on_hand - row.reserved
            details.append({"variant_id": str(line.variant_id), "sku": line.sku,
                            "requested": line.quantity, "available": available})
        summary = "; ".join(f"{d['sku']}: {d['requested']} requested, {d['available']} "
                            "available" for d in details)
        raise InsufficientStock(f"not enough stock — {summary}", details=details)

    async def _abort_on(self, shard: Shard, reservation_id: uuid.UUID) -> None:
        """Undo the part reserved on a shard when a later shard was short. The row is
        deleted (not marked released) so the caller may retry with the same id."""
        try:
            async with shard.database.session() as session, session.begin():
                part = await repo.load_reservation(session, reservation_id, for_update=True)
                if part is None or part.status != "active":
                    return
                rows = await repo.settle_lines(session, part.lines, ship=False, now=utcnow())
                await self._publish_settled(session, events.inventory_released(
                    part, reason="aborted", source=self.settings.service_name), rows)
                await repo.delete_reservation(session, part)
            await self.catalog.invalidate({line.product_id for line in part.lines})
        except Exception:  # the sweeper releases it at expiry
            log.exception("could not undo reservation %s on shard %s", reservation_id,
                          shard.name)

    # -- commit / release --------------------------------------------------------------------

    async def commit(self, reservation_id: uuid.UUID, principal: Principal) -> ReservationOut:
        return await self._settle(reservation_id, principal, "commit")

    async def release(self, reservation_id: uuid.UUID, principal: Principal) -> ReservationOut:
        return await self._settle(reservation_id, principal, "release")

    async def _settle(self, reservation_id: uuid.UUID, principal: Principal,
                      action: Literal["commit", "release"]) -> ReservationOut:
        """Commit or release every part, with every part locked first (shards in name order,
        the same order everywhere), so the parts cannot end in different states unless a
        database fails between the commits."""
        touched: set[uuid.UUID] = set()
        async with AsyncExitStack() as stack:
            locked: list[tuple[AsyncSession, Reservation]] = []
            for shard in sorted(await self.shards.all(), key=lambda shard: shard.name):
                session = await stack.enter_async_context(shard.database.session())
                await stack.enter_async_context(session.begin())
                part = await repo.load_reservation(session, reservation_id, for_update=True)
                if part is not None:
                    locked.append((session, part))
            if not locked:
                raise NotFound(f"there is no reservation {reservation_id}")
            self._visible([part for _, part in locked], principal, admin_may=False)
            statuses = {part.status for _, part in locked}
            self._check_transition(reservation_id, action, statuses, locked[0][1])
            now = utcnow()
            for session, part in locked:
                if part.status != "active":
                    continue
                rows = await repo.settle_lines(session, part.lines, ship=action == "commit",
                                               now=now)
                part.status = "committed" if action == "commit" else "released"
                part.updated_at = now
                if action == "commit":
                    settled = events.inventory_committed(part,
                                                         source=self.settings.service_name)
                else:
                    settled = events.inventory_released(part, reason="released",
                                                        source=self.settings.service_name)
                await self._publish_settled(session, settled, rows)
                touched |= {line.product_id for line in part.lines}
            out = reservation_out([part for _, part in locked])
        await self.catalog.invalidate(touched)
        return out

    @staticmethod
    def _check_transition(reservation_id: uuid.UUID, action: str, statuses: set[str],
                          part: Reservation) -> None:
        if action == "commit" and statuses & {"released", "expired"}:
            if "expired" in statuses:
                raise Conflict(f"reservation {reservation_id} expired at "
                               f"{part.expires_at.isoformat()} and its stock was released; "
                               "reserve again", code="reservation_expired")
            raise Conflict(f"reservation {reservation_id} was released; reserve again",
                           code="reservation_released")
        if action == "release" and "committed" in statuses:
            raise Conflict(f"reservation {reservation_id} is committed (sold); it can no "
                           "longer be released — restock instead", code="reservation_committed")

    async def _publish_settled(self, session: AsyncSession, settled: EventEnvelope,
                               rows: Sequence[Any]) -> None:
        """A part's ``inventory.committed`` or ``inventory.released``, then the new counts
        of its variants (``rows``)."""
        await add_event(session, settled)
        for row in rows:
            await add_event(session, events.stock_changed(row,
                                                          source=self.settings.service_name))

    # -- expiry ------------------------------------------------------------------------------

    async def sweep_expired(self) -> int:
        """Release every reservation past its expiry on every shard; how many were."""
        total = 0
        for shard in await self.shards.all():
            while True:
                released = await self._sweep_batch(shard)
                total += released
                if released < self.settings.reservation_sweep_batch_size:
                    break
        return total

    async def _sweep_batch(self, shard: Shard) -> int:
        touched: set[uuid.UUID] = set()
        async with shard.database.session() as session, session.begin():
            now = utcnow()
            expired = await repo.expired_reservations(
                session, now, self.settings.reservation_sweep_batch_size)
            for part in expired:
                rows = await repo.settle_lines(session, part.lines, ship=False, now=now)
                part.status = "expired"
                part.updated_at = now
                await self._publish_settled(session, events.inventory_released(
                    part, reason="expired", source=self.settings.service_name), rows)
                touched |= {line.product_id for line in part.lines}
        if expired:
            log.info("released %d expired reservation(s) on shard %s", len(expired),
                     shard.name)
        await self.catalog.invalidate(touched)
        return len(expired)

    async def run_sweeper(self, interval: float) -> None:
        """Sweep forever (a background task; cancel to stop). An outage is waited out."""
        while True:
            try:
                await self.sweep_expired()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_transient(exc) or getattr(exc, "code", "") == "shard_unavailable":
                    log.warning("reservation sweep failed, retrying: %r", exc)
                else:
                    log.exception("reservation sweep failed")
            await asyncio.sleep(interval)
