"""Routes of the user service: parse, call the service, shape the response.

``/auth/*`` needs no access token (it is how one gets one), ``/users/me*`` acts on the
caller's own account, ``/admin/*`` needs the admin role, ``/.well-known/jwks.json``
publishes the public keys tokens are verified with. Every error response has the core's
``{code, message, details}`` shape.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from services.core.app import Runtime
from services.core.auth import (
    AdminUser,
    CurrentUser,
    Principal,
    optional_user,
    revocation_list_of,
    token_service_of,
)
from services.core.errors import Unauthorized
from services.core.signing import public_jwk
from services.core.state import AppState
from services.user.models import Address, User
from services.user.replay import RegistrationReplay, fingerprint
from services.user.schemas import (
    AddressCreate,
    AddressOut,
    AddressUpdate,
    LoginRequest,
    PasswordChange,
    Preferences,
    PreferencesUpdate,
    ProfileUpdate,
    RefreshRequest,
    RegisterRequest,
    Role,
    RoleGrant,
    TokenPair,
    UserOut,
    UserPage,
)
from services.user.service import Accounts, AddressBook, Administration, Profiles
from services.user.settings import UserSettings
from services.user.throttle import LoginThrottle

# -- dependencies ---------------------------------------------------------------------------

#: Built by the app's lifespan (see :mod:`.app`).
LOGIN_THROTTLE = AppState[LoginThrottle]("login_throttle")


def _settings(runtime: Runtime) -> UserSettings:
    settings = runtime.settings
    assert isinstance(settings, UserSettings)
    return settings


def get_accounts(request: Request, runtime: Runtime) -> Accounts:
    throttle = LOGIN_THROTTLE.of(request)
    return Accounts(runtime.require_database(), runtime.tokens, _settings(runtime), throttle,
                    revocation_list_of(request))


def get_profiles(runtime: Runtime) -> Profiles:
    return Profiles(runtime.require_database(), _settings(runtime))


def get_address_book(runtime: Runtime) -> AddressBook:
    return AddressBook(runtime.require_database(), _settings(runtime))


def get_administration(request: Request, runtime: Runtime) -> Administration:
    return Administration(runtime.require_database(), _settings(runtime),
                          revocation_list_of(request))


AccountsDep = Annotated[Accounts, Depends(get_accounts)]
ProfilesDep = Annotated[Profiles, Depends(get_profiles)]
AddressBookDep = Annotated[AddressBook, Depends(get_address_book)]
AdministrationDep = Annotated[Administration, Depends(get_administration)]


def client_address(request: Request) -> str:
    """Who is knocking, for the per-address login limit. The server (uvicorn with proxy
    headers) has already put the forwarded client address here when behind the gateway."""
    return request.client.host if request.client else "unknown"


def caller_id(principal: Principal) -> uuid.UUID:
    try:
        return uuid.UUID(principal.user_id)
    except ValueError as exc:
        raise Unauthorized("the token does not name an account", code="token_invalid") from exc


def user_out(user: User) -> UserOut:
    return UserOut(id=user.id, email=user.email, full_name=user.full_name, phone=user.phone,
                   roles=sorted(user.roles),  # type: ignore[arg-type]  # a CHECK keeps the column to Role
                   preferences=Preferences.from_stored(user.preferences),
                   created_at=user.created_at, updated_at=user.updated_at)


def address_out(address: Address) -> AddressOut:
    return AddressOut.model_validate(address, from_attributes=True)


# -- /auth ------------------------------------------------------------------------------------

auth_router = APIRouter(prefix="/auth", tags=["auth"])


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=8, max_length=200, pattern=r"^[\x21-\x7e]+$",
    description="Any unique value per registration (a UUID). A retry with the same key "
    "(after a timeout, say) is answered with the account the first attempt made.")]


@auth_router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(body: RegisterRequest, response: Response, runtime: Runtime,
                   accounts: AccountsDep, idempotency_key: IdempotencyKey = None) -> UserOut:
    """Create a customer account. 409 ``email_taken`` when the address has one (log in
    with it instead). With an ``Idempotency-Key``, a retry gets the first attempt's
    account (201, ``Idempotent-Replayed: true``), 409 ``registration_in_progress`` with
    Retry-After while that attempt still runs, 422 ``idempotency_key_reused`` for a key
    used for another address."""
    if idempotency_key is None:
        return user_out(await accounts.register(body.email, body.password, body.full_name))
    settings = _settings(runtime)
    replay = RegistrationReplay(
        runtime.require_cache().redis, settings.cache_key_prefix, idempotency_key,
        fingerprint(body.email, body.full_name),
        wait_seconds=settings.password_hash_max_wait_seconds)
    user, replayed = await accounts.register_once(body.email, body.password, body.full_name,
                                                  replay)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return user_out(user)


@auth_router.post("/login")
async def login(body: LoginRequest, request: Request, accounts: AccountsDep) -> TokenPair:
    """Exchange email and password for an access token (15 min) and a refresh token
    (7 days). 401 ``invalid_credentials``; 429 ``login_throttled`` with Retry-After after
    too many failures for the account or from the client address."""
    return await accounts.login(body.email, body.password, client_address(request))


@auth_router.post("/refresh")
async def refresh(body: RefreshRequest, accounts: AccountsDep) -> TokenPair:
    """Spend a refresh token for a new pair. Each refresh token works once: presenting a
    spent one (401 ``refresh_token_reused``) ends its whole session."""
    return await accounts.refresh(body.refresh_token)


async def presented_user(request: Request) -> Principal | None:
    """The caller if the request carries a good access token, else None: logging out must
    work with an expired or already revoked token in the header too."""
    try:
        return await optional_user(request)
    except Unauthorized:
        return None


@auth_router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(body: RefreshRequest,
                 principal: Annotated[Principal | None, Depends(presented_user)],
                 accounts: AccountsDep) -> Response:
    """End the session of this refresh token. Its access tokens are refused from now on,
    as is the access token the request is sent with, if any."""
    await accounts.logout(body.refresh_token,
                          principal.token_id if principal is not None else None,
                          principal.token_expires_at if principal is not None else None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@auth_router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT)
async def logout_everywhere(principal: CurrentUser, accounts: AccountsDep) -> Response:
    """End every session of the caller (e.g. after losing a device)."""
    await accounts.logout_everywhere(caller_id(principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- /users/me --------------------------------------------------------------------------------

me_router = APIRouter(prefix="/users/me", tags=["profile"])


@me_router.get("")
async def read_profile(principal: CurrentUser, profiles: ProfilesDep) -> UserOut:
    return user_out(await profiles.get(caller_id(principal)))


@me_router.patch("")
async def update_profile(body: ProfileUpdate, principal: CurrentUser,
                         profiles: ProfilesDep) -> UserOut:
    """Change name or phone; fields left out stay, ``null`` clears one."""
    return user_out(await profiles.update_profile(caller_id(principal), body))


@me_router.post("/password")
async def change_password(body: PasswordChange, request: Request, principal: CurrentUser,
                          accounts: AccountsDep) -> TokenPair:
    """Set a new password. Every session ends; the returned pair starts a new one.
    400 ``wrong_current_password``; the same brute-force limits as login apply."""
    return await accounts.change_password(caller_id(principal), body.current_password,
                                          body.new_password, client_address(request))


@me_router.get("/preferences")
async def read_preferences(principal: CurrentUser, profiles: ProfilesDep) -> Preferences:
    return Preferences.from_stored((await profiles.get(caller_id(principal))).preferences)


@me_router.patch("/preferences")
async def update_preferences(body: PreferencesUpdate, principal: CurrentUser,
                             profiles: ProfilesDep) -> Preferences:
    """Change some preferences; the others stay."""
    user = await profiles.update_preferences(caller_id(principal), body)
    return Preferences.from_stored(user.preferences)


@me_router.get("/addresses")
async def list_addresses(principal: CurrentUser, book: AddressBookDep) -> list[AddressOut]:
    """The address book, default first."""
    return [address_out(a) for a in await book.list(caller_id(principal))]


@me_router.post("/addresses", status_code=status.HTTP_201_CREATED)
async def add_address(body: AddressCreate, principal: CurrentUser,
                      book: AddressBookDep) -> AddressOut:
    """Add an address; the first one becomes the default, as does one sent with
    ``is_default: true``. 409 ``address_book_full`` at the size limit."""
    return address_out(await book.create(caller_id(principal), body))


@me_router.get("/addresses/{address_id}")
async def read_address(address_id: uuid.UUID, principal: CurrentUser,
                       book: AddressBookDep) -> AddressOut:
    return address_out(await book.get(caller_id(principal), address_id))


@me_router.patch("/addresses/{address_id}")
async def update_address(address_id: uuid.UUID, body: AddressUpdate, principal: CurrentUser,
                         book: AddressBookDep) -> AddressOut:
    """Change an address; ``is_default: true`` moves the default here. 409
    ``default_required`` for ``is_default: false`` on the default."""
    return address_out(await book.update(caller_id(principal), address_id, body))


@me_router.post("/addresses/{address_id}/default")
async def make_default_address(address_id: uuid.UUID, principal: CurrentUser,
                               book: AddressBookDep) -> AddressOut:
    """Make this the default address."""
    return address_out(await book.update(caller_id(principal), address_id,
                                         AddressUpdate(is_default=True)))


@me_router.delete("/addresses/{address_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_address(address_id: uuid.UUID, principal: CurrentUser,
                         book: AddressBookDep) -> Response:
    """Delete an address; deleting the default promotes the most recently changed other."""
    await book.delete(caller_id(principal), address_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- /admin -----------------------------------------------------------------------------------

admin_router = APIRouter(prefix="/admin/users", tags=["admin"])

EmailFilter = Annotated[str | None, Query(
    min_length=1, max_length=254, pattern=r"^[^\x00-\x1f\x7f]+$",
    description="Only users whose email contains this text (case-insensitive).")]


@admin_router.get("")
async def list_users(
    _: AdminUser, admin: AdministrationDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    email: EmailFilter = None,
) -> UserPage:
    """All accounts, oldest first."""
    users, total = await admin.page(limit=limit, offset=offset, email_contains=email)
    return UserPage(items=[user_out(u) for u in users], total=total, limit=limit,
                    offset=offset)


@admin_router.get("/{user_id}")
async def read_user(user_id: uuid.UUID, _: AdminUser, admin: AdministrationDep) -> UserOut:
    return user_out(await admin.get(user_id))


@admin_router.post("/{user_id}/roles")
async def grant_role(user_id: uuid.UUID, body: RoleGrant, _: AdminUser,
                     admin: AdministrationDep) -> UserOut:
    """Grant a role (granting one the user has is a no-op). It reaches the user's tokens at
    their next refresh."""
    return user_out(await admin.grant(user_id, body.role))


@admin_router.delete("/{user_id}/roles/{role}")
async def revoke_role(user_id: uuid.UUID, role: Role, principal: AdminUser,
                      admin: AdministrationDep) -> UserOut:
    """Take a role away and end the user's sessions: their access tokens are refused at
    once. 409 for ``customer`` (every account has it) and for one's own roles."""
    return user_out(await admin.revoke(caller_id(principal), user_id, role))


# -- /.well-known ------------------------------------------------------------------------------

keys_router = APIRouter(tags=["keys"])


@keys_router.get("/.well-known/jwks.json")
async def jwks(request: Request, response: Response) -> dict[str, list[dict[str, object]]]:
    """The public keys tokens are verified with (RFC 7517): this service's user-token key
    and the services' own keys. Public by nature; cacheable for a few minutes."""
    response.headers["Cache-Control"] = "public, max-age=300"
    trusted = token_service_of(request).trusted
    return {"keys": [public_jwk(key.key, kid) for kid, key in sorted(trusted.items())]}


routers = (auth_router, me_router, admin_router, keys_router)
