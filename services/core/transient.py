"""Telling "the world is briefly broken" from "this request or event is bad".

Consumers retry transient failures for as long as they last (an outage must not send events
to the dead-letter topic) and start-up waits them out; anything else is the input's fault
or a bug.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import exc as sa_exc


class RetryLater(Exception):
    """Raise when something cannot be done *yet* (treated as transient)."""


# PostgreSQL SQLSTATE classes: connection exception, transaction rollback (serialization
# failure, deadlock), insufficient resources, operator intervention (shutdown).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, RetryLater | OSError | asyncio.TimeoutError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa_exc.InterfaceError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if sqlstate:
            return str(sqlstate).startswith(_TRANSIENT_SQLSTATE_CLASSES)
        return isinstance(exc, sa_exc.OperationalError)
    module = type(exc).__module__
    if module.startswith("redis"):
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        return isinstance(exc, RedisConnectionError | RedisTimeoutError)
    if module.startswith("aiokafka"):
        return bool(getattr(exc, "retriable", False)) or type(exc).__name__ in {
            "KafkaConnectionError", "KafkaTimeoutError", "RequestTimedOutError"}
    if module.startswith("httpx"):
        import httpx

        return isinstance(exc, httpx.TransportError)
    from services.core.http import (  # http imports much; only needed here
        CircuitOpenError,
        UpstreamTimeout,
        UpstreamUnavailable,
    )

    return isinstance(exc, CircuitOpenError | UpstreamUnavailable | UpstreamTimeout)
