"""The one way a service calls another over HTTP: aiohttp (httpx's API and responses) behind
a circuit breaker.

Each called service (``target``) gets an aiohttp session and an ``httpx.AsyncClient`` (for
streamed calls) with timeouts, and a :class:`~services.core.breaker.CircuitBreaker`
configured from the JSON the CircuitBreakerPolicy operator renders into a ConfigMap
(hot-reloaded; the format is :mod:`kommerce.contracts.breaker`), so a service's own calls
trip the way the mesh does. Failures are transport errors, timeouts and 5xx answers; 4xx
answers are the caller's problem and count as successes. An open breaker fails fast with
:class:`CircuitOpenError` (503 + ``Retry-After``), which the event consumer also treats as
"retry later". Calls carry the request id and trace context on.

Config files (one, or a folder of them whose ``targets`` are merged) are read by
:func:`load_breaker_config` in the contract's formats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from kommerce.contracts.breaker import BreakerConfig, parse_breaker_config
from services.core.breaker import BreakerState, CircuitBreaker
from services.core.errors import DomainError, ServiceUnavailable
from services.core.logging import current_request_id
from services.core.metrics import counter, gauge, histogram
from services.core.reload import WatchedFile
from services.core.tracing import inject_context

log = logging.getLogger(__name__)

BREAKER_STATE = gauge("circuit_breaker_state",
                      "Client-side breaker state per target (0 closed, 1 half-open, 2 open)",
                      ["target"])
BREAKER_TRANSITIONS = counter("circuit_breaker_transitions_total",
                              "Breaker state changes", ["target", "state"])
CLIENT_CALLS = counter("http_client_requests_total",
                       "Outgoing calls by outcome (success, failure, timeout, rejected)",
                       ["target", "outcome"])
CLIENT_DURATION = histogram("http_client_request_duration_seconds",
                            "Duration of outgoing calls", ["target"])
_STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class CircuitOpenError(ServiceUnavailable):
    code = "circuit_open"

    def __init__(self, target: str, retry_after: float) -> None:
        super().__init__(f"{target} is unavailable (circuit open); retry later",
                         headers={"Retry-After": str(max(1, round(retry_after)))},
                         details={"target": target})
        self.target = target


class UpstreamUnavailable(ServiceUnavailable):
    code = "upstream_unavailable"


class UpstreamTimeout(DomainError):
    status_code, code = 504, "upstream_timeout"


# -- configuration ---------------------------------------------------------------------------


def load_breaker_config(path: Path) -> BreakerConfig:
    """Read a config file, or merge a folder of them (one per CircuitBreakerPolicy)."""
    files = sorted(p for p in path.iterdir() if p.suffix == ".json" and p.is_file()) \
        if path.is_dir() else [path]
    merged = BreakerConfig()
    for file in files:
        data = orjson.loads(file.read_bytes())
        if not isinstance(data, dict):
            raise ValueError(f"{file}: expected a JSON object")
        config = parse_breaker_config(data)
        if "default" in data:
            merged.default = config.default
        merged.targets.update(config.targets)
    return merged.validate_targets()


class Breakers:
    """The breakers of one process, one per target, following the config as it changes."""

    def __init__(self, config: BreakerConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, target: str) -> CircuitBreaker:
        breaker = self._breakers.get(target)
        if breaker is None:
            breaker = CircuitBreaker(target, self.config.policy_for(target), clock=self._clock,
                                     on_transition=_report_transition)
            BREAKER_STATE.labels(target).set(0)
            self._breakers[target] = breaker
        return breaker

    def apply(self, config: BreakerConfig) -> None:
        self.config = config
        for target, breaker in self._breakers.items():
            breaker.policy = config.policy_for(target)

    @classmethod
    def watching(cls, path: Path | None) -> tuple[Breakers, WatchedFile[BreakerConfig] | None]:
        """Breakers following the config file at ``path`` (reference defaults if None or
        absent); run the returned watcher's ``watch()`` to pick up changes."""
        if path is None:
            return cls(), None
        watched = WatchedFile("circuit-breaker", path, load_breaker_config,
                              initial=BreakerConfig())
        breakers = cls(watched.value)
        watched.subscribe(breakers.apply)
        return breakers, watched


def _report_transition(breaker: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
    BREAKER_STATE.labels(breaker.name).set(_STATE_VALUE[new])
    BREAKER_TRANSITIONS.labels(breaker.name, new.value).inc()
    level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
    log.log(level, "circuit breaker for %s: %s -> %s", breaker.name, old.value, new.value,
            extra={"target": breaker.name, "breaker_state": new.value})


# -- the client ------------------------------------------------------------------------------


class AiohttpBackedTransport(AiohttpTransport):
    """httpx's API over aiohttp's connection pool and C parser.

    A service's calls to the others are most of what its event loop does during a
    checkout, and httpx's own transport (httpcore, h11) spent about three times the CPU on
    each (``bench/http_client.py``; figures in the README). The library maps every
    connection error to ``ConnectTimeout``; a refused or dropped connection is no timeout
    (a breaker and the caller's answer, 503 rather than 504, tell them apart), so those are
    mapped again here, and any other aiohttp error becomes a transport error.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        upload = None
        if not isinstance(request.stream, httpx.ByteStream):  # streamed: the gateway's
            # An AsyncClient only sends async streams; httpx types the field as either kind.
            upload = request.stream = _WatchedUpload(cast(httpx.AsyncByteStream, request.stream))
        try:
            return await super().handle_async_request(request)
        except Exception as exc:
            if upload is not None and upload.error is not None:
                # The caller's own body failed (too large, client gone): that is the
                # error to report, not the transport error aiohttp wrapped it in.
                raise upload.error from None
            mapped = self._mapped(request, exc)
            if mapped is exc:
                raise
            raise mapped from exc

    @staticmethod
    def _mapped(request: httpx.Request, exc: Exception) -> Exception:
        if isinstance(exc, httpx.ConnectTimeout):
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(
                    cause, aiohttp.ServerTimeoutError | TimeoutError):
                return httpx.ConnectError(str(exc) or repr(cause), request=request)
        elif isinstance(exc, aiohttp.ClientError):
            return httpx.NetworkError(str(exc) or repr(exc), request=request)
        return exc


class _WatchedUpload(httpx.AsyncByteStream):
    """A streamed request body that remembers the error it raised, if any."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self.stream = stream
        self.error: BaseException | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.stream:
                yield chunk
        except Exception as exc:
            self.error = exc
            raise

    async def aclose(self) -> None:
        await self.stream.aclose()


class ServiceClient:
    """Calls to one target service, guarded by its breaker.

    :meth:`request` (every call but the gateway's) goes straight to aiohttp and hands back
    an ``httpx.Response`` built from the answer: the whole httpx client on top of aiohttp
    cost nearly twice the CPU per call (``bench/http_client.py``; figures in the README).
    :meth:`stream` keeps httpx, whose streamed request and response bodies the gateway
    passes through.
    """

    def __init__(self, target: str, client: httpx.AsyncClient, breaker: CircuitBreaker,
                 session: Callable[[], aiohttp.ClientSession]) -> None:
        self.target = target
        self.client = client
        self.breaker = breaker
        self._base_url = str(client.base_url).rstrip("/")
        self._session = session

    def _acquire(self) -> None:
        if not self.breaker.try_acquire():
            CLIENT_CALLS.labels(self.target, "rejected").inc()
            raise CircuitOpenError(self.target, self.breaker.retry_after())

    def _headers(self, headers: Any) -> httpx.Headers:
        merged = httpx.Headers(headers)
        if (request_id := current_request_id()) and "x-request-id" not in merged:
            merged["x-request-id"] = request_id
        carrier: dict[str, str] = {}
        inject_context(carrier)
        for name, value in carrier.items():
            merged.setdefault(name, value)
        return merged

    def _record(self, response: httpx.Response | None, started: float,
                error: BaseException | None = None) -> None:
        CLIENT_DURATION.labels(self.target).observe(time.perf_counter() - started)
        if error is not None or (response is not None and response.status_code >= 500):
            self.breaker.record_failure()
            outcome = "timeout" if isinstance(error, TimeoutError | httpx.TimeoutException) \
                else "failure"
        else:
            self.breaker.record_success()
            outcome = "success"
        CLIENT_CALLS.labels(self.target, outcome).inc()

    def _timed_out(self, started: float, exc: BaseException) -> UpstreamTimeout:
        self._record(None, started, exc)
        return UpstreamTimeout(f"{self.target} did not answer in time",
                               details={"target": self.target})

    def _unreachable(self, started: float, exc: BaseException) -> UpstreamUnavailable:
        self._record(None, started, exc)
        return UpstreamUnavailable(f"{self.target} cannot be reached",
                                   details={"target": self.target})

    async def request(self, method: str, url: str, *, headers: Any = None, json: Any = None,
                      params: Any = None, data: Any = None,
                      content: bytes | None = None) -> httpx.Response:
        """Send and read the whole response. 5xx responses are returned (and counted as
        failures); transport errors and timeouts raise 503/504 domain errors. The
        breaker's timeout covers connecting and receiving the headers."""
        sent = self._headers(headers)
        if json is not None:
            content = orjson.dumps(json)
            sent.setdefault("content-type", "application/json")
        target = url if "://" in url else self._base_url + url
        if params:
            target = str(httpx.URL(target).copy_merge_params(params))
        self._acquire()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.breaker.policy.timeout_seconds):
                answer = await self._session().request(
                    method, target, headers=sent.multi_items(), data=content or data)
        except TimeoutError as exc:
            raise self._timed_out(started, exc) from exc
        except aiohttp.ClientError as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError):
                raise self._timed_out(started, exc) from exc
            raise self._unreachable(started, exc) from exc
        except BaseException:
            self.breaker.release()  # cancelled: no verdict, but give a trial slot back
            raise
        try:
            body = await answer.read()
        except aiohttp.ClientError as exc:  # the body broke off after the headers
            raise self._unreachable(started, exc) from exc
        finally:
            answer.release()
        response = httpx.Response(answer.status, headers=answer.raw_headers, content=body,
                                  request=httpx.Request(method, target))
        self._record(response, started)
        return response

    @asynccontextmanager
    async def stream(self, method: str, url: str, *, timeout_seconds: float | None = None,
                     **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """Send and yield the response with its body unread (the gateway streams it on).

        The breaker's timeout covers connecting and receiving the headers, unless the call
        names a longer one (the gateway's for routes known to be slow, such as login)."""
        self._acquire()
        kwargs["headers"] = self._headers(kwargs.get("headers"))
        started = time.perf_counter()
        request = self.client.build_request(method, url, **kwargs)
        try:
            async with asyncio.timeout(timeout_seconds or self.breaker.policy.timeout_seconds):
                response = await self.client.send(request, stream=True)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise self._timed_out(started, exc) from exc
        except httpx.TransportError as exc:
            raise self._unreachable(started, exc) from exc
        except BaseException:
            # Cancelled, or the caller's own request body failed (a streamed upload whose
            # client went away): no verdict on the target, but a half-open trial slot
            # must be given back or the breaker would stay half-open and refuse forever.
            self.breaker.release()
            raise
        self._record(response, started)
        try:
            yield response
        finally:
            await response.aclose()

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kwargs)


class HttpClients:
    """The factory: one :class:`ServiceClient` per target, sharing the process's breakers."""

    def __init__(self, breakers: Breakers | None = None, *, user_agent: str = "kommerce",
                 max_connections: int = 100) -> None:
        self.breakers = breakers or Breakers()
        self.user_agent = user_agent
        self.max_connections = max_connections
        self._clients: dict[tuple[str, str], ServiceClient] = {}
        self._sessions: dict[tuple[str, str], aiohttp.ClientSession] = {}

    def client(self, target: str, base_url: str) -> ServiceClient:
        key = (target, base_url)
        if key not in self._clients:
            policy = self.breakers.get(target).policy
            limits = httpx.Limits(max_connections=self.max_connections,
                                  max_keepalive_connections=self.max_connections // 2)
            http = httpx.AsyncClient(
                base_url=base_url,
                transport=AiohttpBackedTransport(limits=limits),
                # The breaker's asyncio timeout bounds the call up to the headers; these
                # bound a stalled body read or a full pool.
                timeout=httpx.Timeout(30.0, connect=policy.timeout_seconds,
                                      pool=policy.timeout_seconds),
                headers={"user-agent": self.user_agent},
            )
            self._clients[key] = ServiceClient(target, http, self.breakers.get(target),
                                               session=lambda: self._session(key))
        return self._clients[key]

    def _session(self, key: tuple[str, str]) -> aiohttp.ClientSession:
        """The target's aiohttp session, made on first use (inside the running loop)."""
        session = self._sessions.get(key)
        if session is None or session.closed:
            policy = self.breakers.get(key[0]).policy
            session = self._sessions[key] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=policy.timeout_seconds,
                                              sock_read=30.0),
                headers={"user-agent": self.user_agent})
        return session

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        sessions, self._sessions = self._sessions, {}
        await asyncio.gather(*(c.client.aclose() for c in clients.values()),
                             *(s.close() for s in sessions.values()))
