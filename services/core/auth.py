"""Tokens, passwords and the FastAPI dependencies that say who is calling.

Access tokens (15 min) and refresh tokens (7 days) are JWTs with ``type``, ``jti``, ``iat``,
``exp`` and ``iss`` claims; an access token can never be used as a refresh token or the
reverse. Refresh tokens carry a ``fam`` (family) claim so the user service can rotate them
and revoke a whole family when an old one is reused. Passwords are hashed with Argon2id off
the event loop (hashing is deliberately slow).

Behind the gateway (``trust_gateway_headers``), the gateway has already verified the token
and passes ``X-User-Id``/``X-User-Roles``; otherwise every service verifies the Bearer token
itself.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from services.core.errors import Forbidden, Unauthorized
from services.core.settings import ServiceSettings

TokenType = Literal["access", "refresh"]
USER_ID_HEADER = "x-user-id"
USER_ROLES_HEADER = "x-user-roles"


class TokenClaims(BaseModel):
    """The verified content of a token."""

    model_config = ConfigDict(frozen=True, extra="allow")

    sub: str
    type: TokenType
    jti: str
    iat: int
    exp: int
    iss: str
    roles: list[str] = Field(default_factory=list)
    fam: str | None = None


class IssuedToken(BaseModel):
    token: str
    claims: TokenClaims
    expires_in: int


class TokenService:
    """Issues and verifies the platform's JWTs with one shared HMAC key."""

    def __init__(self, settings: ServiceSettings, clock: Callable[[], float] = time.time) -> None:
        self._key = settings.jwt_secret.get_secret_value()
        self._algorithm = settings.jwt_algorithm
        self.issuer = settings.jwt_issuer
        self.access_ttl = settings.access_token_ttl_seconds
        self.refresh_ttl = settings.refresh_token_ttl_seconds
        self.leeway = settings.jwt_leeway_seconds
        self._clock = clock

    def issue_access(self, subject: str, roles: Iterable[str] = (), **extra: Any) -> IssuedToken:
        return self._issue(subject, "access", self.access_ttl,
                           {"roles": sorted(set(roles)), **extra})

    def issue_refresh(self, subject: str, family: str | None = None,
                      **extra: Any) -> IssuedToken:
        """A refresh token in ``family`` (a new family when None: a fresh login)."""
        return self._issue(subject, "refresh", self.refresh_ttl,
                           {"fam": family or uuid.uuid4().hex, **extra})

    def _issue(self, subject: str, token_type: TokenType, ttl: int,
               extra: dict[str, Any]) -> IssuedToken:
        now = int(self._clock())
        claims = {**extra, "sub": subject, "type": token_type, "jti": uuid.uuid4().hex,
                  "iat": now, "exp": now + ttl, "iss": self.issuer}
        token = jwt.encode(claims, self._key, algorithm=self._algorithm)
        return IssuedToken(token=token, claims=TokenClaims(**claims), expires_in=ttl)

    def verify(self, token: str, expected_type: TokenType = "access") -> TokenClaims:
        """The claims of a valid, unexpired token of ``expected_type``; else Unauthorized."""
        try:
            claims = jwt.decode(
                token, self._key, algorithms=[self._algorithm], issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["sub", "type", "jti", "iat", "exp", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("the token is invalid", code="token_invalid") from exc
        # pyjwt checks exp against the wall clock; honour an injected clock as well.
        if claims["exp"] + self.leeway < self._clock():
            raise Unauthorized("the token has expired", code="token_expired")
        if claims.get("type") != expected_type:
            raise Unauthorized(f"a {expected_type} token is required", code="wrong_token_type")
        try:
            return TokenClaims(**claims)
        except ValueError as exc:
            raise Unauthorized("the token is invalid", code="token_invalid") from exc


# -- passwords -------------------------------------------------------------------------------

_hasher = PasswordHasher()


async def hash_password(password: str) -> str:
    """Argon2id hash, computed in a thread so the event loop keeps serving."""
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


def password_needs_rehash(password_hash: str) -> bool:
    """True when the hash used weaker parameters than today's (rehash on next login)."""
    return _hasher.check_needs_rehash(password_hash)


# -- dependencies ----------------------------------------------------------------------------


class Principal(BaseModel):
    """Who is calling."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    roles: frozenset[str] = frozenset()
    token_id: str | None = None

    def has_role(self, role: str) -> bool:
        return role in self.roles


def token_service_of(request: Request) -> TokenService:
    return request.app.state.tokens  # type: ignore[no-any-return]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("use 'Authorization: Bearer <token>'", code="token_invalid")
    return token.strip()


async def optional_user(request: Request) -> Principal | None:
    """The caller, or None when the request carries no credentials."""
    settings: ServiceSettings = request.app.state.settings
    if settings.trust_gateway_headers and (user_id := request.headers.get(USER_ID_HEADER)):
        roles = request.headers.get(USER_ROLES_HEADER, "")
        return Principal(user_id=user_id,
                         roles=frozenset(r.strip() for r in roles.split(",") if r.strip()))
    token = _bearer(request)
    if token is None:
        return None
    claims = token_service_of(request).verify(token, "access")
    return Principal(user_id=claims.sub, roles=frozenset(claims.roles), token_id=claims.jti)


async def current_user(
    principal: Annotated[Principal | None, Depends(optional_user)],
) -> Principal:
    """The caller; 401 when the request is anonymous."""
    if principal is None:
        raise Unauthorized()
    return principal


def require_role(role: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting only callers with ``role``: ``Depends(require_role("admin"))``."""

    async def check(principal: Annotated[Principal, Depends(current_user)]) -> Principal:
        if not principal.has_role(role):
            raise Forbidden(f"the '{role}' role is required", code="missing_role")
        return principal

    return check


CurrentUser = Annotated[Principal, Depends(current_user)]
OptionalUser = Annotated[Principal | None, Depends(optional_user)]
AdminUser = Annotated[Principal, Depends(require_role("admin"))]
