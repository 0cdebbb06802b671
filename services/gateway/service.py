"""What the gateway decides before a request leaves it: route, caller, rate.

No HTTP framework here: :class:`Gateway` answers "which route?" (404/405), "who is calling?"
(401) and "may they, right now?" (429) with values or domain errors; ``api.py`` turns a
request into these questions and ``proxy.py`` forwards what passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kommerce.contracts.route_table import Route, RouteTable, has_dot_segment
from services.core.auth import TokenService, refuse_revoked
from services.core.errors import (
    DomainError,
    InvalidRequest,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from services.core.metrics import gauge
from services.core.reload import WatchedFile
from services.core.revocation import RevocationList
from services.gateway.ratelimit import RateDecision, RateLimiter
from services.gateway.routes import load_route_table, local_route_table, route_table_file
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

ROUTES_IN_FORCE = gauge("gateway_routes", "Routes in the route table in force")


class MethodNotAllowed(DomainError):
    status_code, code = 405, "method_not_allowed"


@dataclass(frozen=True)
class Caller:
    """Who sent the request: a verified user, or an anonymous client address."""

    user_id: str | None
    roles: tuple[str, ...]
    address: str

    @property
    def rate_identity(self) -> str:
        """Whom a rate limit counts: the user wherever they connect from, else the address
        (so one user's phone and laptop share their allowance)."""
        return f"user:{self.user_id}" if self.user_id is not None else f"ip:{self.address}"


class Gateway:
    """The route table in force, the token verifier, the revocation list and the rate
    limiter."""

    def __init__(self, settings: GatewaySettings, tokens: TokenService) -> None:
        self.settings = settings
        self.tokens = tokens
        self.limiter: RateLimiter | None = None
        self.revocations: RevocationList | None = None
        self.watched: WatchedFile[RouteTable] | None = None
        self._static: RouteTable | None = None
        self._loaded = False

    # -- routes ------------------------------------------------------------------------------

    def load_routes(self) -> WatchedFile[RouteTable] | None:
        """Load the route table and return the watcher that keeps it current (None for the
        static local table, used when no file is configured).

        A file that is configured but not there yet (the ConfigMap is optional, so the Pod
        can start first) leaves the gateway with no routes and not ready until it appears;
        a file that is there but invalid stops the start (nothing to fall back to).
        """
        path = self.settings.route_table
        if path is None:
            self._static = local_route_table(self.settings)
            self._report(self._static)
            return None
        file = route_table_file(path)  # the mounted folder's key, watched as a file
        self.watched = WatchedFile("gateway-routes", file, load_route_table,
                                   initial=RouteTable())
        self.watched.subscribe(self._take)
        # Asked after loading: a file that appears in between is read again by the watch.
        if file.exists():
            self._take(self.watched.value)
        else:
            log.warning("route table %s does not exist yet; every route answers 404", path)
        return self.watched

    @property
    def table(self) -> RouteTable:
        if self._static is not None:
            return self._static
        if self.watched is None:
            return RouteTable()
        return self.watched.value

    def routes_loaded(self) -> bool:
        return self._static is not None or self._loaded

    async def check_routes(self) -> None:
        """Readiness: a gateway without its route table would answer 404 to everything."""
        if not self.routes_loaded():
            raise RuntimeError(f"route table {self.settings.route_table} is not there yet")

    def _take(self, table: RouteTable) -> None:
        self._loaded = True
        self._report(table)

    @staticmethod
    def _report(table: RouteTable) -> None:
        ROUTES_IN_FORCE.set(len(table.routes))
        log.info("route table %s in force with %d routes", table.version or "(unversioned)",
                 len(table.routes), extra={"route_table_version": table.version})

    def route_for(self, path: str) -> Route:
        """The route serving ``path``; 400 for a path with dot segments, 404 for none."""
        if has_dot_segment(path):
            raise InvalidRequest("the path must not contain '.' or '..' segments",
                                 code="invalid_path")
        route = self.table.match(path)
        if route is None:
            raise NotFound(f"no service serves {path}", code="route_not_found")
        return route

    @staticmethod
    def check_method(route: Route, method: str) -> None:
        """405, naming the methods the route does take, unless it takes ``method``."""
        if not route.allows(method):
            allowed = route.allowed_methods()
            raise MethodNotAllowed(
                f"{method} is not allowed on {route.path_prefix}; use {', '.join(allowed)}",
                details={"allowed": allowed}, headers={"Allow": ", ".join(allowed)})

    # -- callers -----------------------------------------------------------------------------

    async def identify(self, route: Route, authorization: str | None,
                       address: str) -> Caller:
        """The caller behind an ``Authorization`` header.

        A route that requires auth refuses a missing token; on any route a token that is
        sent must be valid and not revoked (an expired one is reported as such, so the
        client refreshes instead of silently browsing as a stranger)."""
        if authorization is None:
            if route.auth_required:
                raise Unauthorized(f"{route.path_prefix} needs 'Authorization: Bearer "
                                   "<access token>'", code="token_missing")
            return Caller(user_id=None, roles=(), address=address)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("use 'Authorization: Bearer <access token>'",
                               code="token_invalid")
        claims = self.tokens.verify(token, "access")
        await refuse_revoked(self.revocations, claims)
        return Caller(user_id=claims.sub, roles=tuple(claims.roles), address=address)

    def timeout_for(self, route: Route, path: str) -> float | None:
        """How long the service may take to answer: the route table's word, else the
        auth paths' (password hashing) timeout for those paths, else None (the
        breaker's)."""
        if route.timeout_seconds is not None:
            return route.timeout_seconds
        if any(path == prefix or path.startswith(prefix.rstrip("/") + "/")
               for prefix in self.settings.auth_paths):
            return self.settings.auth_timeout_seconds
        return None

    # -- rates -------------------------------------------------------------------------------

    async def admit(self, route: Route, caller: Caller) -> RateDecision | None:
        """Count the request against the route's limit; 429 when it is used up."""
        limit = route.rate_limit_per_minute
        if limit is None or self.limiter is None:
            return None
        decision = await self.limiter.hit(route.path_prefix, caller.rate_identity, limit)
        if not decision.allowed:
            raise TooManyRequests(
                f"more than {limit} requests per minute on {route.path_prefix}; retry in "
                f"{decision.retry_after_seconds} s",
                code="rate_limited", retry_after_seconds=decision.retry_after_seconds,
                details={"limit": limit, "window_seconds": self.limiter.window_seconds},
                headers={"Retry-After": str(decision.retry_after_seconds),
                         **decision.headers()})
        return decision
