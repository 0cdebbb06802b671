"""Tokens, passwords and the FastAPI dependencies that say who is calling.

Access tokens (15 min) and refresh tokens (7 days) are JWTs with ``type``, ``jti``, ``iat``,
``exp``, ``iss`` and ``aud`` claims; an access token can never be used as a refresh token or
the reverse. Refresh tokens carry a ``fam`` (family) claim so the user service can rotate
them and revoke a whole family when an old one is reused; access tokens carry the family as
``sid`` (session), so ending a session refuses its access tokens at once
(:mod:`services.core.revocation`).

Signing is asymmetric (:mod:`services.core.signing`): the user service alone holds the
private key of user tokens, verifiers hold only public keys. A service key signs nothing but
its own identity — subject ``service:<name>``, role ``service``, one called service as
audience — and :meth:`TokenService.verify` refuses anything else signed with one. User
access tokens have the API audience (``jwt_api_audience``), accepted by the gateway and by
every service; refresh tokens the user service's own.

Passwords are hashed with Argon2id on a bounded pool (:mod:`services.core.hashing`).

Behind the gateway (``trust_gateway_headers``), the gateway has already verified the token
and passes ``X-User-Id``/``X-User-Roles``; otherwise every service verifies the Bearer token
itself, revocation list included.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Literal, Protocol

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from services.core.errors import Forbidden, Unauthorized
from services.core.hashing import password_hash_pool
from services.core.revocation import RevocationList
from services.core.settings import ServiceSettings
from services.core.signing import (
    DEVELOPMENT_KEY_ID,
    DEVELOPMENT_KEY_PEM,
    USER_KEY_ID,
    TrustedKey,
    algorithm_of,
    key_kind,
    kid_service,
    load_private_key,
    parse_jwks,
    service_kid,
    trusted_key_of,
)
from services.core.state import SETTINGS, AppState

log = logging.getLogger(__name__)

TokenType = Literal["access", "refresh"]
USER_ID_HEADER = "x-user-id"
USER_ROLES_HEADER = "x-user-roles"
SERVICE_ROLE = "service"
SERVICE_SUBJECT_PREFIX = "service:"


class TokenClaims(BaseModel):
    """The verified content of a token."""

    model_config = ConfigDict(frozen=True, extra="allow")

    sub: str
    type: TokenType
    jti: str
    iat: int
    exp: int
    iss: str
    aud: str | list[str]
    roles: list[str] = Field(default_factory=list)
    fam: str | None = None
    sid: str | None = None


class IssuedToken(BaseModel):
    token: str
    claims: TokenClaims
    expires_in: int


def _audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    return [aud] if isinstance(aud, str) else list(aud or [])


class TokenService:
    """Issues tokens with this service's private key (if it has one) and verifies tokens
    against the trusted public keys, enforcing what each kind of key may sign."""

    def __init__(self, settings: ServiceSettings, clock: Callable[[], float] = time.time) -> None:
        self.issuer = settings.jwt_issuer
        self.audience = settings.token_audience
        self.api_audience = settings.jwt_api_audience
        self.access_ttl = settings.access_token_ttl_seconds
        self.refresh_ttl = settings.refresh_token_ttl_seconds
        self.leeway = settings.jwt_leeway_seconds
        self._clock = clock
        self.trusted: dict[str, TrustedKey] = {}
        if settings.jwt_jwks:
            self.trusted.update(parse_jwks(settings.jwt_jwks))
        pem = settings.jwt_private_key.get_secret_value() if settings.jwt_private_key \
            else None
        if pem is None and not settings.jwt_jwks:
            pem, kid = DEVELOPMENT_KEY_PEM, DEVELOPMENT_KEY_ID
        else:
            kid = settings.jwt_key_id or (USER_KEY_ID if settings.component == "user"
                                          else service_kid(settings.component))
        if settings.environment == "production" and (
                kid == DEVELOPMENT_KEY_ID or DEVELOPMENT_KEY_ID in self.trusted):
            raise ValueError("the development signing key is refused in production")
        self.key_id: str | None = None
        self._key: Any = None
        if pem is not None:
            self._key = load_private_key(pem)
            self.key_id = kid
            self._algorithm = algorithm_of(self._key)
            # A service trusts its own key: the user service verifies its refresh tokens.
            self.trusted.setdefault(kid, trusted_key_of(self._key, kid))

    # -- issuing ---------------------------------------------------------------------------

    def issue_access(self, subject: str, roles: Iterable[str] = (), *,
                     audience: str | None = None, session: str | None = None,
                     **extra: Any) -> IssuedToken:
        """An access token. A user token (the default audience: the public API) names its
        session; a service key issues only its own identity to one ``audience``."""
        roles = sorted(set(roles))
        if self.key_id is not None and key_kind(self.key_id) == "service":
            own = SERVICE_SUBJECT_PREFIX + kid_service(self.key_id)
            if subject != own or roles != [SERVICE_ROLE] or audience is None:
                raise ValueError(f"a service key issues only {own!r} with the "
                                 f"{SERVICE_ROLE!r} role to one named audience")
        claims = {"roles": roles, **extra}
        if session is not None:
            claims["sid"] = session
        return self._issue(subject, "access", self.access_ttl,
                           audience or self.api_audience, claims)

    def issue_service(self, audience: str) -> IssuedToken:
        """This service's identity token for calls to the service ``audience``."""
        if self.key_id is None:
            raise RuntimeError("this service holds no signing key")
        name = kid_service(self.key_id) if key_kind(self.key_id) == "service" \
            else self.audience
        return self.issue_access(SERVICE_SUBJECT_PREFIX + name, [SERVICE_ROLE],
                                 audience=audience)

    def issue_refresh(self, subject: str, family: str | None = None,
                      **extra: Any) -> IssuedToken:
        """A refresh token in ``family`` (a new family when None: a fresh login), for the
        issuing (user) service alone."""
        return self._issue(subject, "refresh", self.refresh_ttl, self.audience,
                           {"fam": family or uuid.uuid4().hex, **extra})

    def _issue(self, subject: str, token_type: TokenType, ttl: int, audience: str,
               extra: dict[str, Any]) -> IssuedToken:
        if self._key is None:
            raise RuntimeError("this service holds no signing key (KOMMERCE_JWT_PRIVATE_KEY)")
        now = int(self._clock())
        claims = {**extra, "sub": subject, "type": token_type, "jti": uuid.uuid4().hex,
                  "iat": now, "exp": now + ttl, "iss": self.issuer, "aud": audience}
        token = jwt.encode(claims, self._key, algorithm=self._algorithm,
                           headers={"kid": self.key_id})
        return IssuedToken(token=token, claims=TokenClaims(**claims), expires_in=ttl)

    # -- verifying -------------------------------------------------------------------------

    def verify(self, token: str, expected_type: TokenType = "access") -> TokenClaims:
        """The claims of a valid, unexpired token of ``expected_type`` for this service,
        signed by a trusted key allowed to sign it; else Unauthorized."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthorized("the token is invalid", code="token_invalid") from exc
        trusted = self.trusted.get(kid) if isinstance(kid, str) else None
        if trusted is None:
            raise Unauthorized("the token is not signed by a trusted key",
                               code="token_invalid")
        accepted = [self.audience] if expected_type == "refresh" \
            else [self.api_audience, self.audience]
        try:
            # The audience is checked below, after the type, so that a token of the wrong
            # type is reported as such.
            claims = jwt.decode(
                token, trusted.key, algorithms=[trusted.algorithm], issuer=self.issuer,
                leeway=self.leeway, options={
                    "require": ["sub", "type", "jti", "iat", "exp", "iss", "aud"],
                    "verify_aud": False},
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
        audiences = _audiences(claims)
        if not all(isinstance(aud, str) for aud in audiences) \
                or not set(audiences) & set(accepted):
            raise Unauthorized("the token is not meant for this service",
                               code="token_wrong_audience")
        self._enforce_key_rules(trusted, claims)
        try:
            return TokenClaims(**claims)
        except ValueError as exc:
            raise Unauthorized("the token is invalid", code="token_invalid") from exc

    def _enforce_key_rules(self, trusted: TrustedKey, claims: dict[str, Any]) -> None:
        """What a key may sign: a service key its own identity, to this service alone; a
        user key anything but a service identity."""
        roles = claims.get("roles") or []
        subject = str(claims.get("sub", ""))
        if trusted.kind == "service":
            own = SERVICE_SUBJECT_PREFIX + kid_service(trusted.kid)
            if subject != own or roles != [SERVICE_ROLE]:
                raise Unauthorized("a service key may only assert its own service identity",
                                   code="token_invalid")
            if _audiences(claims) != [self.audience]:
                raise Unauthorized("the service token is not meant for this service",
                                   code="token_wrong_audience")
        elif trusted.kind == "user" and (SERVICE_ROLE in roles
                                         or subject.startswith(SERVICE_SUBJECT_PREFIX)):
            raise Unauthorized("a user token cannot carry a service identity",
                               code="token_invalid")


class _HasRedis(Protocol):
    """What is read here of ``app.state.runtime`` (``services.core.app.ServiceRuntime``,
    which imports this module)."""

    @property
    def redis(self) -> Redis | None: ...


_RUNTIME_REDIS = AppState[_HasRedis]("runtime")
_REVOCATIONS = AppState[RevocationList]("revocations")


def revocation_list_of(request: Request) -> RevocationList | None:
    """The process's revocation list, over the service's Redis (None without Redis)."""
    revocations = _REVOCATIONS.get(request, None)
    if revocations is None:
        runtime = _RUNTIME_REDIS.get(request, None)
        redis = runtime.redis if runtime is not None else None
        if redis is None:
            return None
        settings = SETTINGS.of(request)
        revocations = RevocationList(redis, prefix=settings.token_revocation_prefix,
                                     timeout_seconds=settings.token_revocation_timeout_seconds)
        _REVOCATIONS.put(request.app, revocations)
    return revocations


async def refuse_revoked(revocations: RevocationList | None, claims: TokenClaims) -> None:
    """401 ``token_revoked`` for a token on the revocation list. Service identity tokens
    are not looked up: nothing revokes them (their key is what a breach would rotate)."""
    if revocations is None or claims.sub.startswith(SERVICE_SUBJECT_PREFIX):
        return
    if await revocations.is_revoked(claims.jti, claims.sid):
        raise Unauthorized("this token has been revoked (logged out, password or roles "
                           "changed); log in again", code="token_revoked")


# -- passwords -------------------------------------------------------------------------------

_hasher = PasswordHasher()


async def hash_password(password: str) -> str:
    """Argon2id hash, computed on the bounded hashing pool so the event loop keeps serving;
    503 ``password_hashing_busy`` with Retry-After when the pool's queue is full."""
    return await password_hash_pool().run(lambda: _hasher.hash(password))


async def verify_password(password_hash: str, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await password_hash_pool().run(check)


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
    #: The session (refresh-token family) the access token was issued in, and its expiry.
    session_id: str | None = None
    token_expires_at: int | None = None

    def has_role(self, role: str) -> bool:
        return role in self.roles


#: The app's token service, set by :func:`services.core.app.create_service_app`.
TOKENS = AppState[TokenService]("tokens")


def token_service_of(request: Request) -> TokenService:
    return TOKENS.of(request)


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
    settings = SETTINGS.of(request)
    if settings.trust_gateway_headers and (user_id := request.headers.get(USER_ID_HEADER)):
        roles = request.headers.get(USER_ROLES_HEADER, "")
        return Principal(user_id=user_id,
                         roles=frozenset(r.strip() for r in roles.split(",") if r.strip()))
    token = _bearer(request)
    if token is None:
        return None
    claims = token_service_of(request).verify(token, "access")
    await refuse_revoked(revocation_list_of(request), claims)
    return Principal(user_id=claims.sub, roles=frozenset(claims.roles), token_id=claims.jti,
                     session_id=claims.sid, token_expires_at=claims.exp)


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
