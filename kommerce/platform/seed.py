"""The demo catalog: a few hundred products across the reference's categories.

The catalog is generated (deterministically, so every machine gets the same shop) and
written through the product service's own API with an admin's token, so it passes the
same validation, events and cache as any admin's edits. Seeding is idempotent twice over:
a marker in the data folder skips it on warm starts, and an interrupted seed that runs
again finds the categories and SKUs already there (409) and skips them.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

#: Bumped when the generated catalog changes, so an old data folder gets the new one.
SEED_VERSION = 1
MARKER_FILE = "seed.json"
PRODUCTS_PER_CATEGORY = 50

#: The shard layout's categories (manifests/samples/shard-layout.yaml, after the
#: reference's Database Sharding section): slug -> name, brands, items, variant attribute
#: and its values, and a price range in cents.
CATEGORIES: dict[str, dict[str, Any]] = {
    "electronics": {
        "name": "Electronics", "brands": ["Voltaic", "Lumen", "Aurora", "Pulse", "Nimbus"],
        "items": ["Wireless Headphones", "Bluetooth Speaker", "Smartwatch", "Action Camera",
                  "Earbuds", "Soundbar", "Tablet", "E-Reader", "Drone", "Mini Projector"],
        "attribute": "color", "values": ["Black", "White", "Silver", "Blue"],
        "price": (2_900, 49_900)},
    "computers": {
        "name": "Computers", "brands": ["Quanta", "Helix", "Vertex", "Cobalt", "Orbit"],
        "items": ["Laptop", "27-inch Monitor", "Mechanical Keyboard", "Wireless Mouse",
                  "Desktop PC", "Docking Station", "NVMe SSD", "4K Webcam", "Wi-Fi Router",
                  "Graphics Card"],
        "attribute": "edition", "values": ["Standard", "Pro", "Max"],
        "price": (1_900, 189_900)},
    "clothing": {
        "name": "Clothing", "brands": ["Northwind", "Fjell", "Linnea", "Urban Thread", "Koto"],
        "items": ["Cotton T-Shirt", "Hoodie", "Rain Jacket", "Slim Jeans", "Wool Sweater",
                  "Summer Dress", "Oxford Shirt", "Chino Shorts", "Trench Coat", "Scarf"],
        "attribute": "size", "values": ["S", "M", "L", "XL"],
        "price": (1_500, 24_900)},
    "shoes": {
        "name": "Shoes", "brands": ["Stride", "Terra", "Kite", "Marlow", "Summit"],
        "items": ["Sneakers", "Chelsea Boots", "Sandals", "Loafers", "Running Shoes",
                  "Hiking Boots", "Slippers", "Trainers", "Oxfords", "Clogs"],
        "attribute": "size", "values": ["40", "41", "42", "43", "44"],
        "price": (2_500, 21_900)},
    "home": {
        "name": "Home", "brands": ["Hearth", "Nook", "Solace", "Birch & Co", "Atelier"],
        "items": ["Table Lamp", "Throw Blanket", "Cushion", "Ceramic Vase", "Mug Set",
                  "Wool Rug", "Linen Curtains", "Wall Clock", "Round Mirror", "Bookshelf"],
        "attribute": "color", "values": ["Grey", "Oak", "Sand", "Sage"],
        "price": (1_200, 39_900)},
    "garden": {
        "name": "Garden", "brands": ["Greenleaf", "Bloom", "Rootstock", "Meadow", "Fernway"],
        "items": ["Planter", "Garden Hose", "Shovel", "Pruning Shears", "Bird Feeder",
                  "Watering Can", "Solar Lantern", "Garden Bench", "Leaf Rake", "Seed Kit"],
        "attribute": "size", "values": ["Small", "Medium", "Large"],
        "price": (800, 29_900)},
}


def demo_categories() -> list[dict[str, Any]]:
    return [{"slug": slug, "name": spec["name"],
             "description": f"{spec['name']} from the Kommerce demo shop."}
            for slug, spec in CATEGORIES.items()]


def demo_products() -> list[dict[str, Any]]:
    """Every demo product as the product API's ``ProductIn`` body (same on every run)."""
    rng = random.Random(SEED_VERSION)
    products: list[dict[str, Any]] = []
    for slug, spec in CATEGORIES.items():
        low, high = spec["price"]
        combos = [(brand, item) for item in spec["items"] for brand in spec["brands"]]
        for index, (brand, item) in enumerate(combos[:PRODUCTS_PER_CATEGORY]):
            base = rng.randrange(low, high) // 100 * 100 + 99
            values = spec["values"][: rng.randint(2, len(spec["values"]))]
            variants = [{
                "sku": f"DEMO-{slug[:4].upper()}-{index:03d}-{_sku_part(value)}",
                "name": f"{brand} {item} ({value})",
                "attributes": {spec["attribute"]: value},
                "price": {"amount": base + position * 500, "currency": "EUR"},
                # Some variants sold out, so "in stock" filters have something to do.
                "stock": rng.choice([0, 3, 12, 25, 40, 80, 150]),
            } for position, value in enumerate(values)]
            products.append({
                "category": slug,
                "name": f"{brand} {item}",
                "description": f"The {item.lower()} by {brand}: a demo product of the "
                               f"Kommerce shop in {spec['name'].lower()}.",
                "attributes": {"brand": brand},
                "variants": variants,
            })
    return products


def _sku_part(value: str) -> str:
    return "".join(ch for ch in value.upper() if ch.isalnum())


@dataclass(frozen=True)
class SeedResult:
    created: int
    existing: int
    seconds: float
    skipped: bool = False


def seeded(data_dir: Path) -> bool:
    """Whether this data folder already holds the current demo catalog."""
    try:
        marker = json.loads((data_dir / MARKER_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return bool(marker.get("version") == SEED_VERSION)


async def admin_token(user_url: str, email: str, password: str) -> str:
    """An access token of the bootstrap admin, by the ordinary login."""
    async with httpx.AsyncClient(base_url=user_url, timeout=10) as client:
        response = await client.post("/auth/login", json={"email": email, "password": password})
        response.raise_for_status()
        return str(response.json()["access_token"])


async def seed_catalog(product_url: str, token: str, *, concurrency: int = 8) -> SeedResult:
    """Create the demo categories and products that are missing; 409 means already there.

    Straight to the product service rather than through the gateway: the gateway's per-client
    rate limit (rightly) refuses three hundred writes a second from one address."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    created = existing = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=product_url, headers=headers, timeout=30) as client:
        for category in demo_categories():
            response = await client.post("/categories", json=category)
            if response.status_code != 409:
                response.raise_for_status()
        gate = asyncio.Semaphore(concurrency)

        async def create(product: dict[str, Any]) -> bool:
            async with gate:
                response = await client.post("/products", json=product)
            if response.status_code == 409:
                return False
            response.raise_for_status()
            return True

        for was_created in await asyncio.gather(*(create(p) for p in demo_products())):
            if was_created:
                created += 1
            else:
                existing += 1
    return SeedResult(created=created, existing=existing, seconds=loop.time() - started)


def mark_seeded(data_dir: Path, result: SeedResult) -> None:
    (data_dir / MARKER_FILE).write_text(json.dumps(
        {"version": SEED_VERSION, "products": result.created + result.existing}))
