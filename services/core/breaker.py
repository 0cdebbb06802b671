"""The circuit breaker's state machine: pure, synchronous, with an injectable clock.

Semantics follow the reference (opossum): calls are counted in a rolling window of
``rolling_window_seconds`` split into ``rolling_window_buckets`` buckets; when the window
holds at least ``volume_threshold`` calls and ``error_threshold_percentage`` or more of them
failed, the breaker **opens** and rejects calls without making them. After
``reset_timeout_seconds`` it turns **half-open** and lets ``half_open_max_calls`` trial
calls through: a success **closes** it (with a fresh window), a failure opens it again.
Timeouts count as failures. The settings (:class:`BreakerPolicy`) are the contract the
CircuitBreakerPolicy operator writes (:mod:`kommerce.contracts.breaker`); I/O lives in
:mod:`services.core.http`.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from kommerce.contracts.breaker import BreakerPolicy

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker", "WindowStats"]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class _Bucket:
    index: int
    successes: int = 0
    failures: int = 0


@dataclass(frozen=True)
class WindowStats:
    successes: int
    failures: int

    @property
    def total(self) -> int:
        return self.successes + self.failures

    @property
    def error_percentage(self) -> float:
        return 100.0 * self.failures / self.total if self.total else 0.0


class CircuitBreaker:
    """One breaker (per called service). Not thread-safe; one event loop owns it."""

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[CircuitBreaker, BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self.name = name
        self._policy = policy or BreakerPolicy()
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._trials_in_flight = 0
        self._buckets: list[_Bucket] = []

    @property
    def policy(self) -> BreakerPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: BreakerPolicy) -> None:
        """Hot reload: new limits apply from now on; state is kept, the window restarts
        when its geometry changed."""
        if (policy.rolling_window_seconds, policy.rolling_window_buckets) != (
                self._policy.rolling_window_seconds, self._policy.rolling_window_buckets):
            self._buckets.clear()
        self._policy = policy

    @property
    def state(self) -> BreakerState:
        """Current state; an open breaker whose reset timeout passed reads as half-open."""
        if (self._state is BreakerState.OPEN
                and self._clock() - self._opened_at >= self._policy.reset_timeout_seconds):
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker will let a trial call through."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._policy.reset_timeout_seconds - self._clock())

    def try_acquire(self) -> bool:
        """Whether a call may go ahead now. Every True must be followed by exactly one of
        :meth:`record_success` / :meth:`record_failure` (or :meth:`release`)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._trials_in_flight < \
                self._policy.half_open_max_calls:
            self._trials_in_flight += 1
            return True
        return False

    def release(self) -> None:
        """The acquired call never happened (cancelled before it was made)."""
        if self._state is BreakerState.HALF_OPEN and self._trials_in_flight:
            self._trials_in_flight -= 1

    def record_success(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._trials_in_flight = max(0, self._trials_in_flight - 1)
            self._buckets.clear()
            self._transition(BreakerState.CLOSED)
            return
        self._current_bucket().successes += 1

    def record_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._trials_in_flight = max(0, self._trials_in_flight - 1)
            self._open()
            return
        if self._state is BreakerState.OPEN:
            return  # a call admitted before it opened; the verdict is already in
        self._current_bucket().failures += 1
        stats = self.window()
        if (stats.total >= max(1, self._policy.volume_threshold)
                and stats.error_percentage >= self._policy.error_threshold_percentage):
            self._open()

    def window(self) -> WindowStats:
        """Calls in the rolling window, oldest buckets expired."""
        self._expire()
        return WindowStats(sum(b.successes for b in self._buckets),
                           sum(b.failures for b in self._buckets))

    def _bucket_index(self) -> int:
        width = self._policy.rolling_window_seconds / self._policy.rolling_window_buckets
        return math.floor(self._clock() / width)

    def _expire(self) -> None:
        oldest = self._bucket_index() - self._policy.rolling_window_buckets + 1
        if self._buckets and self._buckets[0].index < oldest:
            self._buckets = [b for b in self._buckets if b.index >= oldest]

    def _current_bucket(self) -> _Bucket:
        self._expire()
        index = self._bucket_index()
        if not self._buckets or self._buckets[-1].index != index:
            self._buckets.append(_Bucket(index))
        return self._buckets[-1]

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._trials_in_flight = 0
        self._transition(BreakerState.OPEN)

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_transition is not None:
            self._on_transition(self, old, new)
