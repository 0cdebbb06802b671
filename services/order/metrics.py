"""The order service's own counters, shared by the saga (:mod:`.orchestrator`) and the
handlers of other services' events (:mod:`.events`)."""

from __future__ import annotations

from services.core.metrics import counter

ORDERS_TOTAL = counter("orders_total", "Orders reaching each status", ["status"])
