"""SQL for accounts, address books and refresh-token families: module functions on the
caller's session, which owns the transaction, so the service decides where a transaction
starts and ends, and what gets locked first."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.user.models import Address, RefreshFamily, User

# -- users ----------------------------------------------------------------------------------


async def user(session: AsyncSession, user_id: uuid.UUID, *,
               for_update: bool = False) -> User | None:
    """The user; with ``for_update`` the row is held until commit, which serialises every
    change to one user's account (and address book) without table-wide locks."""
    query = select(User).where(User.id == user_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def user_by_email(session: AsyncSession, email: str, *,
                        for_update: bool = False) -> User | None:
    query = select(User).where(User.email == email)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def add_user(session: AsyncSession, new: User) -> User:
    """Insert ``new`` now, so a taken email fails here (the unique constraint) rather than
    at commit, and the row's defaults are read back for the event that announces it."""
    session.add(new)
    await session.flush()
    return new


async def users_page(session: AsyncSession, *, limit: int, offset: int,
                     email_contains: str | None = None) -> tuple[Sequence[User], int]:
    query = select(User)
    if email_contains:
        escaped = (email_contains.replace("\\", "\\\\").replace("%", "\\%")
                   .replace("_", "\\_"))
        query = query.where(User.email.ilike(f"%{escaped}%", escape="\\"))
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    users = (await session.execute(
        query.order_by(User.created_at, User.id).limit(limit).offset(offset)
    )).scalars().all()
    return users, int(total or 0)


# -- address book ---------------------------------------------------------------------------


async def addresses(session: AsyncSession, user_id: uuid.UUID) -> Sequence[Address]:
    """The default first, then oldest first (the order a checkout page lists them)."""
    return (await session.execute(
        select(Address).where(Address.user_id == user_id)
        .order_by(Address.is_default.desc(), Address.created_at, Address.id)
    )).scalars().all()


async def address(session: AsyncSession, user_id: uuid.UUID,
                  address_id: uuid.UUID) -> Address | None:
    return (await session.execute(
        select(Address).where(Address.user_id == user_id, Address.id == address_id)
    )).scalar_one_or_none()


async def count_addresses(session: AsyncSession, user_id: uuid.UUID) -> int:
    return int(await session.scalar(
        select(func.count()).where(Address.user_id == user_id)) or 0)


async def clear_default_address(session: AsyncSession, user_id: uuid.UUID) -> None:
    # Flushed before the new default is set: the partial unique index is checked per
    # statement, so the old default must be gone first.
    await session.flush()
    await session.execute(
        update(Address).where(Address.user_id == user_id, Address.is_default)
        .values(is_default=False, updated_at=func.now())
        .execution_options(synchronize_session="fetch")
    )


async def most_recent_address(session: AsyncSession, user_id: uuid.UUID) -> Address | None:
    return (await session.execute(
        select(Address).where(Address.user_id == user_id)
        .order_by(Address.updated_at.desc(), Address.created_at.desc(), Address.id)
        .limit(1)
    )).scalar_one_or_none()


async def add_address(session: AsyncSession, new: Address) -> Address:
    session.add(new)
    await session.flush()
    return new


async def delete_address(session: AsyncSession, gone: Address) -> None:
    await session.delete(gone)
    await session.flush()


# -- refresh-token families -----------------------------------------------------------------


async def add_family(session: AsyncSession, new: RefreshFamily) -> None:
    session.add(new)
    await session.flush()


async def family(session: AsyncSession, family_id: str, user_id: uuid.UUID, *,
                 for_update: bool = False) -> RefreshFamily | None:
    """The family; ``for_update`` makes concurrent refreshes of one session take turns, so
    two requests presenting the same token cannot both rotate it."""
    query = select(RefreshFamily).where(RefreshFamily.id == family_id,
                                        RefreshFamily.user_id == user_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def revoke_families(session: AsyncSession, user_id: uuid.UUID, reason: str,
                          family_id: str | None = None) -> list[str]:
    """Revoke one family (or all of the user's); returns the ids of those that were still
    live, whose access tokens the revocation list must then refuse."""
    query = update(RefreshFamily).where(RefreshFamily.user_id == user_id,
                                        RefreshFamily.revoked_at.is_(None))
    if family_id is not None:
        query = query.where(RefreshFamily.id == family_id)
    result = await session.execute(
        query.values(revoked_at=func.now(), revoked_reason=reason)
        .returning(RefreshFamily.id)
        .execution_options(synchronize_session=False))
    return [str(revoked) for revoked in result.scalars()]


async def purge_dead_families(session: AsyncSession, user_id: uuid.UUID,
                              now: datetime) -> None:
    """Drop the user's sessions whose last token has expired (revoked ones included: none
    of their tokens can be presented any more), so the table stays the size of the live
    sessions rather than of every login ever."""
    await session.execute(
        delete(RefreshFamily).where(RefreshFamily.user_id == user_id,
                                    RefreshFamily.expires_at < now))
