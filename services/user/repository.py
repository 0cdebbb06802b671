"""SQL for the user service; nothing above this line writes a query.

Each method runs in the caller's session and transaction: the service decides where a
transaction starts and ends, and what gets locked first.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.user.models import Address, RefreshFamily, User


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- users --------------------------------------------------------------------------------

    async def get(self, user_id: uuid.UUID, *, lock: bool = False) -> User | None:
        """The user; with ``lock`` the row is held until commit, which serialises every
        change to one user's account (and address book) without table-wide locks."""
        query = select(User).where(User.id == user_id)
        if lock:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def by_email(self, email: str, *, lock: bool = False) -> User | None:
        query = select(User).where(User.email == email)
        if lock:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def add(self, user: User) -> User:
        self.session.add(user)
        await self.session.flush()
        return user

    async def page(self, *, limit: int, offset: int,
                   email_contains: str | None = None) -> tuple[Sequence[User], int]:
        query = select(User)
        if email_contains:
            escaped = (email_contains.replace("\\", "\\\\").replace("%", "\\%")
                       .replace("_", "\\_"))
            query = query.where(User.email.ilike(f"%{escaped}%", escape="\\"))
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        users = (await self.session.execute(
            query.order_by(User.created_at, User.id).limit(limit).offset(offset)
        )).scalars().all()
        return users, int(total or 0)

    # -- address book -------------------------------------------------------------------------

    async def addresses(self, user_id: uuid.UUID) -> Sequence[Address]:
        """The default first, then oldest first (the order a checkout page lists them)."""
        return (await self.session.execute(
            select(Address).where(Address.user_id == user_id)
            .order_by(Address.is_default.desc(), Address.created_at, Address.id)
        )).scalars().all()

    async def address(self, user_id: uuid.UUID, address_id: uuid.UUID) -> Address | None:
        return (await self.session.execute(
            select(Address).where(Address.user_id == user_id, Address.id == address_id)
        )).scalar_one_or_none()

    async def count_addresses(self, user_id: uuid.UUID) -> int:
        return int(await self.session.scalar(
            select(func.count()).where(Address.user_id == user_id)) or 0)

    async def clear_default_address(self, user_id: uuid.UUID) -> None:
        # Flushed before the new default is set: the partial unique index is checked per
        # statement, so the old default must be gone first.
        await self.session.flush()
        await self.session.execute(
            update(Address).where(Address.user_id == user_id, Address.is_default)
            .values(is_default=False, updated_at=func.now())
            .execution_options(synchronize_session="fetch")
        )

    async def most_recent_address(self, user_id: uuid.UUID) -> Address | None:
        return (await self.session.execute(
            select(Address).where(Address.user_id == user_id)
            .order_by(Address.updated_at.desc(), Address.created_at.desc(), Address.id)
            .limit(1)
        )).scalar_one_or_none()

    async def add_address(self, address: Address) -> Address:
        self.session.add(address)
        await self.session.flush()
        return address

    async def delete_address(self, address: Address) -> None:
        await self.session.delete(address)
        await self.session.flush()

    # -- refresh-token families ---------------------------------------------------------------

    async def add_family(self, family: RefreshFamily) -> None:
        self.session.add(family)
        await self.session.flush()

    async def family(self, family_id: str, user_id: uuid.UUID, *,
                     lock: bool = False) -> RefreshFamily | None:
        """The family; ``lock`` makes concurrent refreshes of one session take turns, so two
        requests presenting the same token cannot both rotate it."""
        query = select(RefreshFamily).where(RefreshFamily.id == family_id,
                                            RefreshFamily.user_id == user_id)
        if lock:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def revoke_families(self, user_id: uuid.UUID, reason: str,
                              family_id: str | None = None) -> list[str]:
        """Revoke one family (or all of the user's); returns the ids of those that were
        still live, whose access tokens the revocation list must then refuse."""
        query = update(RefreshFamily).where(RefreshFamily.user_id == user_id,
                                            RefreshFamily.revoked_at.is_(None))
        if family_id is not None:
            query = query.where(RefreshFamily.id == family_id)
        result = await self.session.execute(
            query.values(revoked_at=func.now(), revoked_reason=reason)
            .returning(RefreshFamily.id)
            .execution_options(synchronize_session=False))
        return [str(family) for family in result.scalars()]

    async def purge_dead_families(self, user_id: uuid.UUID, now: datetime) -> None:
        """Drop the user's sessions whose last token has expired (revoked ones included:
        none of their tokens can be presented any more), so the table stays the size of the
        live sessions rather than of every login ever."""
        await self.session.execute(
            delete(RefreshFamily).where(RefreshFamily.user_id == user_id,
                                        RefreshFamily.expires_at < now))
