"""The user service's rules: accounts and sessions, profile, address book, roles.

No FastAPI here; failures are the core's domain errors. The service objects take the
:class:`~services.core.db.Database`, as the other services' do, and each public method owns
its transaction(s), each in a session of its own (the repository's functions work on the
session they are given): password hashing (deliberately slow) happens outside them so a
login never holds a database connection while argon2 runs, and a detected refresh-token
reuse commits the revocation *before* the error is raised, so the rollback that an
exception causes cannot undo it.

Every session that ends (logout, logout everywhere, password change, a role taken away, a
reused refresh token) is also put on the revocation list once its database change has
committed, so the access tokens issued in it are refused at once rather than when they
expire (:mod:`services.core.revocation`).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.core.auth import (
    IssuedToken,
    TokenService,
    hash_password,
    password_needs_rehash,
    verify_password,
)
from services.core.db import Database
from services.core.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    Unauthorized,
    Unprocessable,
)
from services.core.events.outbox import add_event
from services.core.metrics import counter
from services.core.revocation import RevocationList
from services.user import events, repository
from services.user.models import Address, RefreshFamily, User
from services.user.replay import RegistrationReplay
from services.user.schemas import (
    AddressCreate,
    AddressUpdate,
    Preferences,
    PreferencesUpdate,
    ProfileUpdate,
    Role,
    TokenPair,
    password_problems,
)
from services.user.settings import UserSettings
from services.user.throttle import LoginThrottle

log = logging.getLogger(__name__)

REGISTRATIONS = counter("user_registrations_total", "Accounts registered")
LOGINS = counter("user_logins_total", "Logins by result", ["result"])
REFRESHES = counter("user_token_refreshes_total", "Refresh-token presentations by result",
                    ["result"])

_dummy_hash: str | None = None


async def _dummy_password_hash() -> str:
    """A hash to check against when the email is unknown, so "no such account" takes as
    long as "wrong password" and response times do not reveal which accounts exist."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = await hash_password(secrets.token_urlsafe(24))
    return _dummy_hash


def _now() -> datetime:
    return datetime.now(UTC)


def _subject(sub: str) -> uuid.UUID:
    try:
        return uuid.UUID(sub)
    except ValueError as exc:
        raise Unauthorized("the token does not name an account", code="token_invalid") from exc


INVALID_CREDENTIALS = "the email address or password is wrong"


async def end_sessions(revocations: RevocationList | None, settings: UserSettings,
                       session_ids: Sequence[str]) -> None:
    """Refuse the access tokens of these (already revoked) sessions from now on. After the
    commit: should Redis fail, the sessions are still over and their tokens expire within
    one access-token lifetime, as before the list existed."""
    if revocations is None or not session_ids:
        return
    try:
        await revocations.end_sessions(
            session_ids, settings.access_token_ttl_seconds + settings.jwt_leeway_seconds)
    except Exception:  # the database revocation stands; say so loudly
        log.exception("could not put %d ended sessions on the revocation list",
                      len(session_ids))


@dataclass
class Accounts:
    """Registration, login, refresh-token rotation, logout and password changes."""

    database: Database
    tokens: TokenService
    settings: UserSettings
    throttle: LoginThrottle
    revocations: RevocationList | None = None

    async def register_once(self, email: str, password: str, full_name: str | None,
                            replay: RegistrationReplay) -> tuple[User, bool]:
        """:meth:`register` under an Idempotency-Key: the account and whether it was made
        by an earlier request with the key (a retry after the client gave up)."""
        user_id = await replay.claim()
        if user_id is not None:
            async with self.database.session() as session, session.begin():
                user = await repository.user(session, user_id)
            if user is None:
                raise _account_gone()
            return user, True
        try:
            user = await self.register(email, password, full_name)
        except BaseException:
            await replay.forget()
            raise
        await replay.done(user.id)
        return user, False

    async def register(self, email: str, password: str, full_name: str | None) -> User:
        """A new customer account; ``user.registered`` commits with it or not at all."""
        password_hash = await hash_password(password)
        try:
            async with self.database.session() as session, session.begin():
                if await repository.user_by_email(session, email) is not None:
                    raise _email_taken()
                user = await repository.add_user(session, User(
                    email=email, password_hash=password_hash, full_name=full_name,
                    roles=["customer"], preferences=Preferences().model_dump()))
                await add_event(session, events.user_registered(
                    user, source=self.settings.service_name))
        except IntegrityError as exc:  # a concurrent registration won the race
            raise _email_taken() from exc
        REGISTRATIONS.inc()
        return user

    async def login(self, email: str, password: str, client_address: str) -> TokenPair:
        """A fresh session (a new refresh-token family) for the right password."""
        user = await self._check_password(email, password, client_address)
        LOGINS.labels("success").inc()
        # Hashes made with weaker parameters than today's are upgraded while we hold the
        # plain password, which is the only time we have it.
        rehashed = (await hash_password(password)
                    if password_needs_rehash(user.password_hash) else None)
        async with self.database.session() as session, session.begin():
            locked = await repository.user(session, user.id, for_update=True)
            if locked is None:
                raise _account_gone()
            if rehashed is not None:
                locked.password_hash = rehashed
            await repository.purge_dead_families(session, locked.id, _now())
            return await self._new_session(session, locked)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate: the presented token is spent and a new one of the same family returned.

        A token that is validly signed but no longer the family's current one has been
        used before — by the user or by whoever stole it, we cannot tell which — so the
        whole family is revoked and both parties must log in again.
        """
        claims = self.tokens.verify(refresh_token, "refresh")
        user_id = _subject(claims.sub)
        if not claims.fam:
            raise Unauthorized("the refresh token has no session", code="token_invalid")
        reused = False
        async with self.database.session() as session, session.begin():
            family = await repository.family(session, claims.fam, user_id,
                                             for_update=True)
            if family is None:
                REFRESHES.labels("unknown").inc()
                raise Unauthorized("the refresh token is not recognised; log in again",
                                   code="token_invalid")
            if family.revoked_at is not None:
                REFRESHES.labels("revoked").inc()
                raise Unauthorized("this session has ended; log in again",
                                   code="session_revoked")
            if family.current_jti != claims.jti:
                family.revoked_at, family.revoked_reason = _now(), "reuse"
                reused = True
            else:
                max_age = timedelta(seconds=self.settings.refresh_family_max_age_seconds)
                if family.created_at + max_age < _now():
                    REFRESHES.labels("session_expired").inc()
                    raise Unauthorized("this session is too old; log in again",
                                       code="session_expired")
                user = await repository.user(session, user_id)
                if user is None:
                    raise _account_gone()
                pair, refresh = self._issue(user, family.id)
                family.current_jti = refresh.claims.jti
                family.rotated_at = _now()
                family.expires_at = _expiry(refresh)
        if reused:
            await end_sessions(self.revocations, self.settings, [claims.fam])
            REFRESHES.labels("reused").inc()
            log.warning("refresh token reused; revoked session %s of user %s",
                        claims.fam, user_id)
            raise Unauthorized(
                "this refresh token was already used, so the session has been ended to "
                "protect the account; log in again", code="refresh_token_reused")
        REFRESHES.labels("rotated").inc()
        return pair

    async def logout(self, refresh_token: str, access_token_id: str | None = None,
                     access_expires_at: int | None = None) -> None:
        """End the session the token belongs to, and its access tokens with it (also the
        one the request was sent with, when it was); ending an ended session is fine."""
        claims = self.tokens.verify(refresh_token, "refresh")
        if not claims.fam:
            raise Unauthorized("the refresh token has no session", code="token_invalid")
        async with self.database.session() as session, session.begin():
            await repository.revoke_families(session, _subject(claims.sub), "logout",
                                             claims.fam)
        # Listed even when the session had already ended: a retried logout whose first
        # attempt failed to reach Redis repairs the list.
        await end_sessions(self.revocations, self.settings, [claims.fam])
        if self.revocations is not None and access_token_id and access_expires_at:
            try:
                await self.revocations.revoke_token(access_token_id, access_expires_at)
            except Exception:  # the session is ended all the same
                log.exception("could not put access token %s on the revocation list",
                              access_token_id)

    async def logout_everywhere(self, user_id: uuid.UUID) -> int:
        """End every session of the user; returns how many were live."""
        async with self.database.session() as session, session.begin():
            ended = await repository.revoke_families(session, user_id, "logout_all")
        await end_sessions(self.revocations, self.settings, ended)
        return len(ended)

    async def change_password(self, user_id: uuid.UUID, current: str, new: str,
                              client_address: str) -> TokenPair:
        """Set a new password, end every other session and start a new one for the caller.

        The current password is checked under the same brute-force limits as a login, or a
        stolen access token would be an unlimited password oracle.
        """
        async with self.database.session() as session, session.begin():
            user = await repository.user(session, user_id)
        if user is None:
            raise _account_gone()
        problems = password_problems(new, user.email)
        if problems:
            raise Unprocessable("the new password is not acceptable: " + "; ".join(problems),
                                code="weak_password", details={"problems": problems})
        try:
            await self._check_password(user.email, current, client_address)
        except Unauthorized as exc:
            raise InvalidRequest("the current password is wrong",
                                 code="wrong_current_password") from exc
        new_hash = await hash_password(new)
        async with self.database.session() as session, session.begin():
            user = await repository.user(session, user_id, for_update=True)
            if user is None:
                raise _account_gone()
            user.password_hash = new_hash
            user.updated_at = _now()
            ended = await repository.revoke_families(session, user_id, "password_changed")
            pair = await self._new_session(session, user)
        await end_sessions(self.revocations, self.settings, ended)
        return pair

    async def _check_password(self, email: str, password: str, client_address: str) -> User:
        await self.throttle.attempt(email, client_address)
        async with self.database.session() as session, session.begin():
            user = await repository.user_by_email(session, email)
        if user is None:
            await verify_password(await _dummy_password_hash(), password)
            LOGINS.labels("failure").inc()
            raise Unauthorized(INVALID_CREDENTIALS, code="invalid_credentials")
        if not await verify_password(user.password_hash, password):
            LOGINS.labels("failure").inc()
            raise Unauthorized(INVALID_CREDENTIALS, code="invalid_credentials")
        await self.throttle.succeeded(email, client_address)
        return user

    async def _new_session(self, session: AsyncSession, user: User) -> TokenPair:
        pair, refresh = self._issue(user, family=None)
        assert refresh.claims.fam is not None
        await repository.add_family(session, RefreshFamily(
            id=refresh.claims.fam, user_id=user.id, current_jti=refresh.claims.jti,
            expires_at=_expiry(refresh)))
        return pair

    def _issue(self, user: User, family: str | None) -> tuple[TokenPair, IssuedToken]:
        """Roles are read from the row at every issue, so a granted or revoked role takes
        effect at the next refresh (within one access-token lifetime)."""
        refresh = self.tokens.issue_refresh(str(user.id), family=family)
        access = self.tokens.issue_access(str(user.id), roles=user.roles,
                                          session=refresh.claims.fam)
        return TokenPair(access_token=access.token, refresh_token=refresh.token,
                         expires_in=access.expires_in,
                         refresh_expires_in=refresh.expires_in), refresh


def _expiry(token: IssuedToken) -> datetime:
    return datetime.fromtimestamp(token.claims.exp, UTC)


def _email_taken() -> Conflict:
    return Conflict("an account with this email address already exists",
                    code="email_taken")


def _account_gone() -> Unauthorized:
    return Unauthorized("the account no longer exists", code="account_unavailable")


@dataclass
class Profiles:
    """The signed-in user's own profile and preferences."""

    database: Database
    settings: UserSettings

    async def get(self, user_id: uuid.UUID) -> User:
        async with self.database.session() as session, session.begin():
            user = await repository.user(session, user_id)
        if user is None:
            raise _account_gone()
        return user

    async def update_profile(self, user_id: uuid.UUID, update: ProfileUpdate) -> User:
        changes = {name: getattr(update, name) for name in update.model_fields_set}
        return await self._change(user_id, changes)

    async def update_preferences(self, user_id: uuid.UUID,
                                 update: PreferencesUpdate) -> User:
        async with self.database.session() as session, session.begin():
            user = await self._locked(session, user_id)
            current = Preferences.from_stored(user.preferences)
            merged = current.model_copy(update=update.model_dump(exclude_unset=True))
            if merged != current:
                user.preferences = merged.model_dump()
                await _publish_update(session, self.settings, user, ["preferences"])
        return user

    async def _change(self, user_id: uuid.UUID, changes: dict[str, object]) -> User:
        async with self.database.session() as session, session.begin():
            user = await self._locked(session, user_id)
            changed = [name for name, value in changes.items()
                       if getattr(user, name) != value]
            for name in changed:
                setattr(user, name, changes[name])
            if changed:
                await _publish_update(session, self.settings, user, changed)
        return user

    async def _locked(self, session: AsyncSession, user_id: uuid.UUID) -> User:
        user = await repository.user(session, user_id, for_update=True)
        if user is None:
            raise _account_gone()
        return user


async def _publish_update(session: AsyncSession, settings: UserSettings, user: User,
                          changed: Sequence[str]) -> None:
    """Bump the version and publish ``user.updated`` in the caller's transaction."""
    user.version += 1
    user.updated_at = _now()
    await add_event(session, events.user_updated(user, changed,
                                                 source=settings.service_name))


@dataclass
class AddressBook:
    """A user's addresses: at most ``max_addresses_per_user``, and exactly one default
    whenever there is any (the first address becomes it; deleting it promotes the most
    recently changed remaining one). Every write locks the user's row first, so concurrent
    writes to one book take turns and the one-default rule cannot race."""

    database: Database
    settings: UserSettings

    async def list(self, user_id: uuid.UUID) -> Sequence[Address]:
        async with self.database.session() as session, session.begin():
            return await repository.addresses(session, user_id)

    async def get(self, user_id: uuid.UUID, address_id: uuid.UUID) -> Address:
        async with self.database.session() as session, session.begin():
            return await self._address(session, user_id, address_id)

    async def create(self, user_id: uuid.UUID, new: AddressCreate) -> Address:
        async with self.database.session() as session, session.begin():
            await self._lock_book(session, user_id)
            count = await repository.count_addresses(session, user_id)
            limit = self.settings.max_addresses_per_user
            if count >= limit:
                raise Conflict(f"an address book holds at most {limit} addresses; delete one "
                               "first", code="address_book_full", details={"limit": limit})
            make_default = new.is_default or count == 0
            if make_default:
                await repository.clear_default_address(session, user_id)
            return await repository.add_address(session, Address(
                user_id=user_id, is_default=make_default,
                **new.model_dump(exclude={"is_default"})))

    async def update(self, user_id: uuid.UUID, address_id: uuid.UUID,
                     update: AddressUpdate) -> Address:
        async with self.database.session() as session, session.begin():
            await self._lock_book(session, user_id)
            address = await self._address(session, user_id, address_id)
            changes = update.model_dump(exclude_unset=True)
            make_default = changes.pop("is_default", None)
            if make_default is False and address.is_default:
                raise Conflict("the address book needs a default address; make another "
                               "address the default instead", code="default_required")
            for name, value in changes.items():
                setattr(address, name, value)
            if make_default and not address.is_default:
                await repository.clear_default_address(session, user_id)
                address.is_default = True
            address.updated_at = _now()
            return address

    async def delete(self, user_id: uuid.UUID, address_id: uuid.UUID) -> None:
        async with self.database.session() as session, session.begin():
            await self._lock_book(session, user_id)
            address = await self._address(session, user_id, address_id)
            was_default = address.is_default
            await repository.delete_address(session, address)
            if was_default:
                successor = await repository.most_recent_address(session, user_id)
                if successor is not None:
                    successor.is_default = True
                    successor.updated_at = _now()

    async def _lock_book(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        if await repository.user(session, user_id, for_update=True) is None:
            raise _account_gone()

    async def _address(self, session: AsyncSession, user_id: uuid.UUID,
                       address_id: uuid.UUID) -> Address:
        address = await repository.address(session, user_id, address_id)
        if address is None:
            raise NotFound("no such address in your address book", code="address_not_found")
        return address


@dataclass
class Administration:
    """What admins do to other accounts: look them up, grant and revoke roles."""

    database: Database
    settings: UserSettings
    revocations: RevocationList | None = None

    async def page(self, *, limit: int, offset: int,
                   email_contains: str | None) -> tuple[Sequence[User], int]:
        async with self.database.session() as session, session.begin():
            return await repository.users_page(session, limit=limit, offset=offset,
                                               email_contains=email_contains)

    async def get(self, user_id: uuid.UUID) -> User:
        async with self.database.session() as session, session.begin():
            return await self._user(session, user_id)

    async def grant(self, user_id: uuid.UUID, role: Role) -> User:
        async with self.database.session() as session, session.begin():
            user = await self._user(session, user_id, for_update=True)
            if role not in user.roles:
                user.roles = sorted({*user.roles, role})
                await _publish_update(session, self.settings, user, ["roles"])
        log.info("granted role %s to user %s", role, user_id)
        return user

    async def revoke(self, actor_id: uuid.UUID, user_id: uuid.UUID, role: Role) -> User:
        """Take a role away. Every account is a customer, and an admin cannot demote
        themself (the last admin would lock everyone out). The user's sessions end, so the
        role is gone at once rather than at their next refresh."""
        if role == "customer":
            raise Conflict("every account has the customer role", code="role_required")
        if actor_id == user_id:
            raise Conflict("you cannot take a role from yourself; ask another admin",
                           code="cannot_demote_self")
        ended: list[str] = []
        async with self.database.session() as session, session.begin():
            user = await self._user(session, user_id, for_update=True)
            if role in user.roles:
                user.roles = sorted(set(user.roles) - {role})
                ended = await repository.revoke_families(session, user_id, "role_revoked")
                await _publish_update(session, self.settings, user, ["roles"])
        await end_sessions(self.revocations, self.settings, ended)
        log.info("revoked role %s from user %s", role, user_id)
        return user

    async def _user(self, session: AsyncSession, user_id: uuid.UUID, *,
                    for_update: bool = False) -> User:
        user = await repository.user(session, user_id, for_update=for_update)
        if user is None:
            raise NotFound("no such user", code="user_not_found")
        return user


async def ensure_admin(database: Database, settings: UserSettings, email: str,
                       password: str) -> User | None:
    """Seed the first admin: create ``email`` as an admin, or promote the existing account
    if ``password`` is its password. An existing account with another password is left
    alone (returns None): whoever registered the address first must not become admin just
    because an operator later configured it."""
    async with database.session() as session, session.begin():
        user = await repository.user_by_email(session, email)
    if user is None:
        password_hash = await hash_password(password)
        try:
            async with database.session() as session, session.begin():
                user = await repository.add_user(session, User(
                    email=email, password_hash=password_hash,
                    full_name=None, roles=["admin", "customer"],
                    preferences=Preferences().model_dump()))
                await add_event(session, events.user_registered(
                    user, source=settings.service_name))
            return user
        except IntegrityError:  # another replica seeded it first
            async with database.session() as session, session.begin():
                user = await repository.user_by_email(session, email)
            if user is None:
                raise
    if not await verify_password(user.password_hash, password):
        log.warning("bootstrap admin %s exists with another password; not promoted", email)
        return None
    return await Administration(database, settings).grant(user.id, "admin")
