"""Prometheus metrics of the operator itself: how many reconciles, how many failed, how long."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

RECONCILES = Counter(
    "kommerce_operator_reconciles_total", "Reconcile runs, by kind and outcome.",
    ["kind", "outcome"])
RECONCILE_SECONDS = Histogram(
    "kommerce_operator_reconcile_duration_seconds", "Time spent in one reconcile run.",
    ["kind"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
API_REQUESTS = Counter(
    "kommerce_operator_api_requests_total",
    "Requests the operator's reconcilers sent to the API server, by HTTP verb.", ["verb"])


@contextmanager
def reconcile_timer(kind: str) -> Iterator[None]:
    """Count and time one reconcile; the outcome is 'error' when it raises."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        RECONCILES.labels(kind, "error").inc()
        raise
    else:
        RECONCILES.labels(kind, "success").inc()
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
