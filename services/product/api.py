"""The product service's HTTP routes: parse, call the service, shape the response.

Reads are public; catalog writes (stock adjustments included) need the ``admin`` role.
Reservations are internal to checkout: reserving, committing and releasing need the
``service`` role (the order saga's own identity), and reading one the ``service`` or the
``admin`` role. A shopper sees stock on the products; a shopper never holds it.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from services.core.auth import AdminUser, CurrentUser, Principal, require_role
from services.core.errors import Forbidden, Unprocessable
from services.core.state import AppState
from services.product.inventory import InventoryService
from services.product.repository import ProductFilter
from services.product.schemas import (
    MAX_AMOUNT,
    SLUG_PATTERN,
    CategoryIn,
    CategoryOut,
    CategoryPatch,
    PriceIn,
    ProductIn,
    ProductOut,
    ProductPage,
    ProductPatch,
    ProductSort,
    ReservationIn,
    ReservationOut,
    StockUpdate,
    VariantIn,
    VariantLookupOut,
    VariantPatch,
)
from services.product.service import CatalogService

router = APIRouter()

_SLUG = re.compile(SLUG_PATTERN)
_ATTRIBUTE_FILTER = re.compile(r"^([a-z][a-z0-9_]{0,62}):([^\x00]{1,200})$")


#: Built by the app's lifespan (see :mod:`.app`).
# (An AppState is an async dependency: FastAPI would run a plain ``def`` one in a worker
# thread, which costs more than the whole cached read.)
CATALOG = AppState[CatalogService]("catalog")
INVENTORY = AppState[InventoryService]("inventory")


async def checkout_or_admin(principal: CurrentUser) -> Principal:
    """The order saga reading its reservation, or an admin looking into a checkout."""
    if not (principal.has_role("service") or principal.has_role("admin")):
        raise Forbidden("reservations are internal to checkout: the 'service' role is "
                        "required (or 'admin', to read one)", code="missing_role")
    return principal


Catalog = Annotated[CatalogService, Depends(CATALOG)]
Inventory = Annotated[InventoryService, Depends(INVENTORY)]
#: Only the checkout (the order service's own identity) holds, sells or frees stock.
Checkout = Annotated[Principal, Depends(require_role("service"))]
CheckoutOrAdmin = Annotated[Principal, Depends(checkout_or_admin)]


# -- categories ------------------------------------------------------------------------------


@router.get("/categories", tags=["categories"], summary="All categories, by slug")
async def list_categories(catalog: Catalog) -> list[CategoryOut]:
    return await catalog.list_categories()


@router.get("/categories/{slug}", tags=["categories"], summary="One category")
async def get_category(slug: str, catalog: Catalog) -> CategoryOut:
    return await catalog.get_category(slug)


@router.post("/categories", status_code=status.HTTP_201_CREATED, tags=["categories"],
             summary="Create a category (admin)")
async def create_category(body: CategoryIn, catalog: Catalog, _: AdminUser) -> CategoryOut:
    return await catalog.create_category(body)


@router.patch("/categories/{slug}", tags=["categories"], summary="Change a category (admin)")
async def update_category(slug: str, body: CategoryPatch, catalog: Catalog,
                          _: AdminUser) -> CategoryOut:
    return await catalog.update_category(slug, body)


@router.delete("/categories/{slug}", status_code=status.HTTP_204_NO_CONTENT,
               tags=["categories"], summary="Delete an empty category (admin)")
async def delete_category(slug: str, catalog: Catalog, _: AdminUser) -> None:
    await catalog.delete_category(slug)


# -- products --------------------------------------------------------------------------------


def _filters(category: list[str] | None, min_price: int | None, max_price: int | None,
             currency: str | None, attr: list[str] | None, q: str | None,
             in_stock: bool) -> ProductFilter:
    categories = tuple(dict.fromkeys(category or ()))
    bad = [c for c in categories if not _SLUG.match(c)]
    if bad:
        raise Unprocessable(f"not a category slug: {bad[0]!r}", code="invalid_filter")
    attributes: list[tuple[str, str]] = []
    for item in attr or ():
        match = _ATTRIBUTE_FILTER.match(item)
        if match is None:
            raise Unprocessable(f"attribute filters look like 'color:red', not {item!r}",
                                code="invalid_filter")
        attributes.append((match.group(1), match.group(2)))
    return ProductFilter(categories=categories, min_price=min_price, max_price=max_price,
                         currency=currency, attributes=tuple(attributes), q=q,
                         in_stock=in_stock)


@router.get("/products", tags=["products"], summary="List products, filtered, one page")
async def list_products(
    catalog: Catalog,
    category: Annotated[list[str] | None, Query(
        max_length=20, description="Only these categories (repeat for several).")] = None,
    min_price: Annotated[int | None, Query(
        ge=0, le=MAX_AMOUNT, description="Some variant costs at least this (minor units).")
    ] = None,
    max_price: Annotated[int | None, Query(
        ge=0, le=MAX_AMOUNT, description="Some variant costs at most this (minor units).")
    ] = None,
    currency: Annotated[str | None, Query(
        pattern=r"^[A-Z]{3}$", description="Price filters apply to this currency.")] = None,
    attr: Annotated[list[str] | None, Query(
        max_length=20, description="'name:value'; the product or one of its variants has "
        "it. Repeat to require several.")] = None,
    q: Annotated[str | None, Query(
        min_length=1, max_length=200, pattern=r"^[^\x00]+$",
        description="Text the product's name contains (case-insensitive).")] = None,
    in_stock: Annotated[bool, Query(description="Only products with a variant available.")
    ] = False,
    sort: ProductSort = ProductSort.NEWEST,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(
        max_length=1000, description="'next_cursor' of the previous page.")] = None,
) -> ProductPage:
    filters = _filters(category, min_price, max_price, currency, attr, q, in_stock)
    return await catalog.list_products(filters, sort, cursor, limit)


@router.get("/products/{product_id}", response_model=ProductOut, tags=["products"],
            summary="One product with its variants, prices and stock")
async def get_product(product_id: uuid.UUID, catalog: Catalog) -> Response:
    # The cached document was a validated ProductOut when it was stored; sending its bytes
    # as they are keeps the hot path to a dict lookup in the process and no model round
    # trip (nor decoding and re-encoding the JSON).
    return Response(await catalog.product_json(product_id), media_type="application/json")


@router.post("/products", status_code=status.HTTP_201_CREATED, tags=["products"],
             summary="Create a product with its variants (admin)")
async def create_product(body: ProductIn, catalog: Catalog, _: AdminUser) -> ProductOut:
    return await catalog.create_product(body)


@router.patch("/products/{product_id}", tags=["products"],
              summary="Change a product; a new category may move it to another shard (admin)")
async def update_product(product_id: uuid.UUID, body: ProductPatch, catalog: Catalog,
                         _: AdminUser) -> ProductOut:
    return await catalog.update_product(product_id, body)


@router.delete("/products/{product_id}", status_code=status.HTTP_204_NO_CONTENT,
               tags=["products"], summary="Delete a product and its variants (admin)")
async def delete_product(product_id: uuid.UUID, catalog: Catalog, _: AdminUser) -> None:
    await catalog.delete_product(product_id)


# -- variants, prices, stock -----------------------------------------------------------------


@router.post("/products/{product_id}/variants", status_code=status.HTTP_201_CREATED,
             tags=["variants"], summary="Add a variant (admin)")
async def add_variant(product_id: uuid.UUID, body: VariantIn, catalog: Catalog,
                      _: AdminUser) -> ProductOut:
    return await catalog.add_variant(product_id, body)


@router.patch("/products/{product_id}/variants/{variant_id}", tags=["variants"],
              summary="Rename a variant or change its attributes (admin)")
async def update_variant(product_id: uuid.UUID, variant_id: uuid.UUID, body: VariantPatch,
                         catalog: Catalog, _: AdminUser) -> ProductOut:
    return await catalog.update_variant(product_id, variant_id, body)


@router.delete("/products/{product_id}/variants/{variant_id}", tags=["variants"],
               summary="Retire a variant without active reservations (admin)")
async def delete_variant(product_id: uuid.UUID, variant_id: uuid.UUID, catalog: Catalog,
                         _: AdminUser) -> ProductOut:
    return await catalog.delete_variant(product_id, variant_id)


@router.get("/variants/{variant_id}", tags=["variants"],
            summary="A variant by its id alone, with its current price and stock",
            responses={404: {"description": "No such variant"}})
async def get_variant(variant_id: uuid.UUID, catalog: Catalog) -> VariantLookupOut:
    # Carts and checkouts know only variant ids; this is how they price a line.
    return await catalog.get_variant(variant_id)


@router.put("/products/{product_id}/variants/{variant_id}/price", tags=["variants"],
            summary="Set a variant's price; publishes price.changed (admin)")
async def set_price(product_id: uuid.UUID, variant_id: uuid.UUID, body: PriceIn,
                    catalog: Catalog, _: AdminUser) -> ProductOut:
    return await catalog.set_price(product_id, variant_id, body)


@router.post("/products/{product_id}/variants/{variant_id}/stock", tags=["inventory"],
             summary="Set (stock take) or adjust (delivery, write-off) units on hand (admin)")
async def update_stock(product_id: uuid.UUID, variant_id: uuid.UUID, body: StockUpdate,
                       catalog: Catalog, _: AdminUser) -> ProductOut:
    return await catalog.update_stock(product_id, variant_id, body)


# -- reservations ----------------------------------------------------------------------------


@router.post("/inventory/reservations", status_code=status.HTTP_201_CREATED,
             tags=["inventory"],
             summary="Hold stock for a checkout (service only; idempotent by id)",
             responses={200: {"model": ReservationOut,
                              "description": "A retry: the reservation made before"}})
async def reserve(body: ReservationIn, inventory: Inventory, user: Checkout,
                  response: Response) -> ReservationOut:
    reservation, created = await inventory.reserve(user, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return reservation


@router.get("/inventory/reservations/{reservation_id}", tags=["inventory"],
            summary="A reservation and its state (its service, or an admin)")
async def get_reservation(reservation_id: uuid.UUID, inventory: Inventory,
                          user: CheckoutOrAdmin) -> ReservationOut:
    return await inventory.get(reservation_id, user)


@router.post("/inventory/reservations/{reservation_id}/commit", tags=["inventory"],
             summary="Sell the reserved stock (its service only; idempotent)")
async def commit_reservation(reservation_id: uuid.UUID, inventory: Inventory,
                             user: Checkout) -> ReservationOut:
    return await inventory.commit(reservation_id, user)


@router.post("/inventory/reservations/{reservation_id}/release", tags=["inventory"],
             summary="Give the reserved stock back (its service only; idempotent)")
async def release_reservation(reservation_id: uuid.UUID, inventory: Inventory,
                              user: Checkout) -> ReservationOut:
    return await inventory.release(reservation_id, user)
