"""Publishes each namespace's gateway route table, coalescing bursts into one write.

Every CommerceService contributes its routes to one shared ConfigMap per namespace. Applying
it from every reconcile would rewrite a growing object once per service when a whole shop is
applied at once; instead reconciles mark the namespace dirty and one worker thread renders
the table from the current index and applies it, at most a few times a second.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from functools import cache

from kommerce.contracts.route_table import ROUTE_TABLE_CONFIGMAP
from operators.commerceservice.render import RoutedService, render_route_table
from operators.kube import KubeError
from operators.runtime import kube

log = logging.getLogger(__name__)
COALESCE_SECONDS = 0.3


class RouteTablePublisher:
    def __init__(self, services_in: Callable[[str], Sequence[RoutedService]] | None = None
                 ) -> None:
        self._services_in = services_in
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def attach(self, services_in: Callable[[str], Sequence[RoutedService]]) -> None:
        """Give the publisher its view of the services (the operator's index)."""
        self._services_in = services_in
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="route-tables", daemon=True)
            self._thread.start()

    def mark_dirty(self, namespace: str) -> None:
        with self._lock:
            self._dirty.add(namespace)
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            threading.Event().wait(COALESCE_SECONDS)
            with self._lock:
                namespaces, self._dirty = self._dirty, set()
            for namespace in sorted(namespaces):
                self._publish(namespace)

    def _publish(self, namespace: str) -> None:
        assert self._services_in is not None
        services = sorted(self._services_in(namespace), key=lambda s: s.name)
        try:
            if services:
                kube().apply(render_route_table(namespace, services))
            else:
                kube().delete("v1", "ConfigMap", namespace, ROUTE_TABLE_CONFIGMAP)
        except KubeError as error:
            log.warning("route table for %s not published (%s); retrying", namespace, error)
            self.mark_dirty(namespace)


@cache
def route_table_publisher() -> RouteTablePublisher:
    return RouteTablePublisher()
