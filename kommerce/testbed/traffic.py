"""A steady load on one URL while a release moves traffic: every answer timed, and
coloured by the ``X-Kommerce-Color`` header the blue-green colours' Pods send, so the moment
traffic moved and any request that failed meanwhile can be read off afterwards.

Used by the real-node tests and by ``bench/rollout_flip.py --real-node``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx


@dataclass
class Sample:
    at: float
    ok: bool
    color: str
    detail: str


@dataclass
class Traffic:
    """A load loop: workers calling one URL, each answer timed and coloured.

    ``rate`` (requests per second, over all workers) paces them; None sends back to back.
    ``fresh_connections`` opens a connection per request, as many clients behind a Service
    do, so kube-proxy balances each one by the rules in force at that moment.
    """

    url: str
    workers: int = 4
    fresh_connections: bool = True
    rate: float | None = None
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _work(self) -> None:
        headers = {"Connection": "close"} if self.fresh_connections else {}
        interval = self.workers / self.rate if self.rate else 0.0
        next_at = time.monotonic()
        with httpx.Client(timeout=10, trust_env=False) as client:
            while not self._stop.is_set():
                if interval:
                    next_at += interval
                    if (delay := next_at - time.monotonic()) > 0:
                        time.sleep(delay)
                started = time.monotonic()
                try:
                    response = client.get(self.url, headers=headers)
                    sample = Sample(started, response.status_code == 200,
                                    response.headers.get("x-kommerce-color", ""),
                                    f"{response.status_code}")
                except httpx.HTTPError as error:
                    sample = Sample(started, False, "", f"{type(error).__name__}: {error}")
                with self._lock:
                    self.samples.append(sample)

    @contextmanager
    def running(self) -> Iterator[Traffic]:
        threads = [threading.Thread(target=self._work, daemon=True)
                   for _ in range(self.workers)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=15)

    def since(self, moment: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.at >= moment]

    def failures(self) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if not s.ok]

    def first(self, color: str, after: float) -> float | None:
        return next((s.at - after for s in self.since(after) if s.color == color), None)

    def all_after(self, color: str, after: float) -> float | None:
        """Seconds from ``after`` to the last answer of another colour (None: not yet)."""
        later = self.since(after)
        others = [s.at for s in later if s.color != color]
        if not later or (others and others[-1] == later[-1].at):
            return None
        return (max(others) - after) if others else 0.0
