"""The demo catalog: a few hundred products across the reference's categories, and reviews.

The catalog is generated (deterministically, so every machine gets the same shop) and
written through the product service's own API with an admin's token, so it passes the
same validation, events and cache as any admin's edits. Reviews are written the same way a
shopper writes one: a handful of demo shoppers register and log in through the user
service and post through the review service, so moderation, rating summaries and their
events all run. Seeding is idempotent twice over: a marker in the data folder skips it on
warm starts, and an interrupted seed that runs again finds the categories, SKUs, shoppers
and reviews already there (409) and skips them.
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
    return bool(_marker(data_dir).get("version") == SEED_VERSION)


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


def _marker(data_dir: Path) -> dict[str, Any]:
    try:
        marker = json.loads((data_dir / MARKER_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def mark_seeded(data_dir: Path, result: SeedResult) -> None:
    (data_dir / MARKER_FILE).write_text(json.dumps(
        {"version": SEED_VERSION, "products": result.created + result.existing}))


# -- reviews ------------------------------------------------------------------------------

#: The demo shoppers who write the reviews. The review service takes one review per shopper
#: and product, so a product's reviews come from different people, as in a real shop.
REVIEWERS: tuple[tuple[str, str], ...] = (
    ("Grace Hopper", "grace.hopper"), ("Alan Turing", "alan.turing"),
    ("Katherine Johnson", "katherine.johnson"), ("Edsger Dijkstra", "edsger.dijkstra"),
    ("Barbara Liskov", "barbara.liskov"), ("Donald Knuth", "donald.knuth"),
)
REVIEWER_DOMAIN = "reviewers.example.com"

#: Title and body per star rating; ``{item}`` is the product's item, lower-cased.
REVIEW_TEXTS: dict[int, tuple[tuple[str, str], ...]] = {
    5: (("Exactly what I wanted", "The {item} arrived quickly and works perfectly."),
        ("Excellent value", "Better than the {item} I had before, for less money."),
        ("Would buy again", "Solid build; I have used the {item} every day for a month.")),
    4: (("Very good", "A good {item}; the packaging could be smaller."),
        ("Happy with it", "Does what a {item} should. One star off for the manual.")),
    3: (("It is fine", "An average {item}: nothing wrong, nothing special."),
        ("Okay for the price", "The {item} works, but I expected a little more.")),
    2: (("Disappointing", "The {item} looked better in the pictures."),),
    1: (("Sent it back", "My {item} stopped working after a week; the refund was quick."),),
}
#: How often each star rating is given (most shoppers who write a review liked the thing).
RATING_WEIGHTS = {5: 40, 4: 30, 3: 15, 2: 10, 1: 5}


def reviewer_email(handle: str) -> str:
    return f"{handle}@{REVIEWER_DOMAIN}"


def demo_reviews(product: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The reviews of one demo product as (index into REVIEWERS, the review API's
    ``ReviewIn`` body): none to three, the same on every run, keyed by the product's name
    because its id differs per machine."""
    rng = random.Random(f"{SEED_VERSION}:{product['name']}")
    count = rng.choice([0, 1, 1, 1, 2, 2, 3])
    item = product["name"].removeprefix(product["attributes"]["brand"]).strip().lower()
    reviews = []
    for reviewer in sorted(rng.sample(range(len(REVIEWERS)), count)):
        rating = rng.choices(list(RATING_WEIGHTS), weights=list(RATING_WEIGHTS.values()))[0]
        title, body = rng.choice(REVIEW_TEXTS[rating])
        reviews.append((reviewer, {"rating": rating, "title": title,
                                   "body": body.format(item=item)}))
    return reviews


@dataclass(frozen=True)
class ReviewSeedResult:
    created: int
    existing: int
    seconds: float


def reviews_seeded(data_dir: Path) -> bool:
    """Whether this data folder's demo catalog has its reviews (a folder seeded while the
    review service was left out, or before reviews were seeded, has not)."""
    marker = _marker(data_dir)
    return marker.get("version") == SEED_VERSION and "reviews" in marker


def mark_reviews_seeded(data_dir: Path, result: ReviewSeedResult) -> None:
    marker = _marker(data_dir)
    marker["reviews"] = result.created + result.existing
    (data_dir / MARKER_FILE).write_text(json.dumps(marker))


async def reviewer_token(client: httpx.AsyncClient, handle: str, full_name: str,
                         password: str) -> str:
    """Register the demo shopper (409: already registered) and log in."""
    email = reviewer_email(handle)
    response = await client.post("/auth/register", json={
        "email": email, "password": password, "full_name": full_name})
    if response.status_code != 409:
        response.raise_for_status()
    response = await client.post("/auth/login", json={"email": email, "password": password})
    response.raise_for_status()
    return str(response.json()["access_token"])


async def catalog_ids(client: httpx.AsyncClient) -> dict[str, str]:
    """Every product's id by name, page by page (the product API's cursor)."""
    ids: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/products", params=params)
        response.raise_for_status()
        page = response.json()
        ids.update({item["name"]: item["id"] for item in page["items"]})
        if not (cursor := page.get("next_cursor")):
            return ids


async def reviewer_tokens(user_url: str, password: str) -> list[str]:
    """An access token for each of :data:`REVIEWERS`, registering them first if need be.
    Password hashing makes this the slow part of seeding reviews, so it can run while the
    catalog is still being seeded."""
    async with httpx.AsyncClient(base_url=user_url, timeout=30) as users:
        return list(await asyncio.gather(*(reviewer_token(users, handle, name, password)
                                           for name, handle in REVIEWERS)))


async def seed_reviews(product_url: str, review_url: str, tokens: list[str], *,
                       concurrency: int = 8) -> ReviewSeedResult:
    """Write the demo reviews that are missing, as the shoppers ``tokens`` belong to (see
    :func:`reviewer_tokens`); 409 means that shopper already reviewed the product. Straight
    to the services, like :func:`seed_catalog`, to stay clear of the gateway's rate limit."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with httpx.AsyncClient(base_url=product_url, timeout=30) as products:
        ids = await catalog_ids(products)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=review_url, timeout=30) as client:

        async def write(product_id: str, reviewer: int, review: dict[str, Any]) -> bool:
            async with gate:
                response = await client.post(
                    f"/products/{product_id}/reviews", json=review,
                    headers={"Authorization": f"Bearer {tokens[reviewer]}"})
            if response.status_code == 409:
                return False
            response.raise_for_status()
            return True

        written = await asyncio.gather(*(
            write(ids[product["name"]], reviewer, review)
            for product in demo_products() if product["name"] in ids
            for reviewer, review in demo_reviews(product)))
    created = sum(written)
    return ReviewSeedResult(created=created, existing=len(written) - created,
                            seconds=loop.time() - started)
