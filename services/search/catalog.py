"""Reading the whole catalog from the product service, for a search store that starts empty.

Events only carry changes; a search service deployed after the catalog was filled (or whose
database was lost) would otherwise never learn of products nobody has touched since. The
product service's ``GET /products`` pages through every product, oldest first, with a
cursor, in the same JSON it publishes in ``product.created``, so each page applies exactly as
those events do (version-guarded: a newer version that an event already brought is kept).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from services.core.http import ServiceClient, UpstreamUnavailable

log = logging.getLogger(__name__)

PAGE_SIZE = 100


async def catalog_pages(product: ServiceClient, page_size: int = PAGE_SIZE
                        ) -> AsyncIterator[list[dict[str, Any]]]:
    """Every product, a page at a time; an unreachable or failing product service raises
    (:class:`UpstreamUnavailable` and the core client's errors are transient)."""
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": page_size, "sort": "oldest"}
        if cursor is not None:
            params["cursor"] = cursor
        response = await product.get("/products", params=params)
        if response.status_code != 200:
            raise UpstreamUnavailable(
                f"the product service answered {response.status_code} to a catalog read",
                details={"target": product.target, "status": response.status_code})
        body = response.json()
        items = body.get("items") or []
        if items:
            yield items
        cursor = body.get("next_cursor")
        if not cursor:
            return
