"""What the search service knows about a product: a flat document derived from events.

The product service publishes the whole product on create/update; the search document keeps
only what queries, filters, facets and result cards need, plus each variant's price and
availability so ``price.changed`` and ``stock.changed`` (which name one variant) can be
applied without asking the product service.

``brand`` is not a column of the catalog: it is the product attribute named ``brand``, lifted
out because shoppers facet on it first. Attributes are multi-valued (a T-shirt's product
attributes plus each variant's colour and size), so they are kept as name → sorted values.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from kommerce.contracts.events.product import ProductChanged

BRAND_ATTRIBUTE = "brand"


class VariantFacts(BaseModel):
    id: uuid.UUID
    sku: str
    price: int = Field(ge=0, description="Minor units.")
    currency: str
    available: int


class ProductDocument(BaseModel):
    """One searchable product; ``version`` is the product's, so stale events are dropped."""

    id: uuid.UUID
    version: int
    name: str
    description: str = ""
    category: str
    brand: str | None = None
    attributes: dict[str, list[str]] = Field(default_factory=dict)
    variants: list[VariantFacts] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    #: Average approved review rating (None: not rated) and how many reviews it averages;
    #: not part of product events, filled from the review service's ``rating.changed``.
    rating: float | None = None
    rating_count: int = 0

    @property
    def attribute_pairs(self) -> list[str]:
        """``name:value`` strings, the form facets and filters use (a name has no colon:
        the API's ``attr=name:value`` filter splits on the first one)."""
        return [f"{name}:{value}" for name, values in sorted(self.attributes.items())
                for value in values]

    @property
    def price_min(self) -> int | None:
        return min((v.price for v in self.variants), default=None)

    @property
    def price_max(self) -> int | None:
        return max((v.price for v in self.variants), default=None)

    @property
    def currency(self) -> str | None:
        return self.variants[0].currency if self.variants else None

    @property
    def in_stock(self) -> bool:
        return any(v.available > 0 for v in self.variants)

    @classmethod
    def from_product(cls, product: ProductChanged) -> ProductDocument:
        """From a ``product.created``/``product.updated`` payload (the product's JSON), or a
        catalog page's product, read through its contract."""
        attributes: dict[str, set[str]] = {}
        brand = None
        for name, value in product.attributes.items():
            if name.lower() == BRAND_ATTRIBUTE:
                brand = value
                continue
            attributes.setdefault(name, set()).add(value)
        variants = []
        for variant in product.variants:
            for name, value in variant.attributes.items():
                if name.lower() != BRAND_ATTRIBUTE:
                    attributes.setdefault(name, set()).add(value)
            variants.append(VariantFacts(
                id=variant.id, sku=variant.sku, price=variant.price.amount,
                currency=variant.price.currency, available=variant.stock.available))
        return cls(
            id=product.id, version=product.version, name=product.name,
            description=product.description, category=product.category,
            brand=brand, attributes={k: sorted(v) for k, v in attributes.items()},
            variants=variants, images=list(product.images),
            created_at=product.created_at, updated_at=product.updated_at)

    def with_price(self, variant_id: uuid.UUID, amount: int) -> ProductDocument:
        return self.model_copy(update={"variants": [
            v.model_copy(update={"price": amount}) if v.id == variant_id else v
            for v in self.variants]})

    def with_available(self, variant_id: uuid.UUID, available: int) -> ProductDocument:
        return self.model_copy(update={"variants": [
            v.model_copy(update={"available": available}) if v.id == variant_id else v
            for v in self.variants]})
