"""Password hashing on a bounded pool: as many threads as cores, a bounded queue before them.

Argon2id is slow on purpose and takes 64 MiB while it runs. Handed to the default executor,
hashes queued without bound on a loaded machine: each request waited longer than the last,
past the gateway's timeout, while the work behind the timed-out ones went on. Here at most
``workers`` hashes run (more threads would only share the same cores), at most
``queue_limit`` wait, and none waits longer than ``max_wait_seconds``; a request beyond
that is answered 503 with a Retry-After derived from how long hashes take now, so a client
backs off instead of piling on. A waiting hash whose request was given up is dropped before
it runs.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from services.core.errors import ServiceUnavailable
from services.core.metrics import counter

T = TypeVar("T")

REFUSED = counter("password_hashes_refused_total",
                  "Password hashes refused with 503 (queue full or waited too long)",
                  ["reason"])


class _WaitedTooLong(Exception):
    pass


class PasswordHashPool:
    """The process's password-hashing threads and their admission rule."""

    def __init__(self, workers: int | None = None, queue_limit: int = 64,
                 max_wait_seconds: float = 8.0) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.queue_limit = queue_limit
        self.max_wait_seconds = max_wait_seconds
        self._executor = ThreadPoolExecutor(max_workers=self.workers,
                                            thread_name_prefix="password-hash")
        self._admitted = 0
        self._seconds_per_hash = 0.1  # a running average, first guess until measured

    def shutdown(self) -> None:
        """Let the threads end once the hashes already given to them are done."""
        self._executor.shutdown(wait=False)

    @property
    def capacity(self) -> int:
        return self.workers + self.queue_limit

    def _busy(self, reason: str) -> ServiceUnavailable:
        REFUSED.labels(reason).inc()
        waiting = max(0, self._admitted - self.workers)
        retry_after = max(1, math.ceil(self._seconds_per_hash * (waiting + 1) / self.workers))
        return ServiceUnavailable(
            "the service is busy checking other passwords; try again shortly",
            code="password_hashing_busy", details={"retry_after_seconds": retry_after},
            headers={"Retry-After": str(retry_after)})

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` on a hashing thread; 503 when the queue is full or the wait too long."""
        if self._admitted >= self.capacity:
            raise self._busy("queue_full")
        self._admitted += 1
        queued = time.monotonic()

        def timed() -> T:
            started = time.monotonic()
            if started - queued > self.max_wait_seconds:
                raise _WaitedTooLong
            result = work()
            took = time.monotonic() - started
            self._seconds_per_hash += (took - self._seconds_per_hash) * 0.2
            return result

        try:
            # Cancelling the awaiting request cancels the job too while it still waits.
            return await asyncio.get_running_loop().run_in_executor(self._executor, timed)
        except _WaitedTooLong:
            raise self._busy("waited_too_long") from None
        finally:
            self._admitted -= 1


_pool: PasswordHashPool | None = None


def password_hash_pool() -> PasswordHashPool:
    """The process's pool (created with the defaults unless configured first)."""
    global _pool
    if _pool is None:
        _pool = PasswordHashPool()
    return _pool


def configure_password_hashing(workers: int | None, queue_limit: int,
                               max_wait_seconds: float) -> PasswordHashPool:
    """Size the process's pool from settings (the user service does at start)."""
    global _pool
    pool = password_hash_pool()
    if (pool.workers, pool.queue_limit, pool.max_wait_seconds) != (
            workers or pool.workers, queue_limit, max_wait_seconds):
        pool.shutdown()
        pool = _pool = PasswordHashPool(workers, queue_limit, max_wait_seconds)
    return pool
