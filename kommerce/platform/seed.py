"""The demo catalog: a few hundred products across the reference's categories, and reviews.

The catalog is generated (deterministically, so every machine gets the same shop) and
written through the product service's own API with an admin's token, so it passes the
same validation, events and cache as any admin's edits. Reviews are written the same way a
shopper writes one: a handful of demo shoppers register and log in through the user
service and post through the review service, so moderation, rating summaries and their
events all run. Seeding is idempotent twice over: a marker in the data folder skips it on
warm starts, and an interrupted seed that runs again finds the categories, SKUs, shoppers
and reviews already there (409) and skips them.

Seeding runs right after start-up, when the machine is busiest, so its patience is derived
from how long the services took to become ready (:meth:`Patience.for_readiness`) and every
call is retried on timeouts and 5xx answers; a call that still fails raises
:class:`SeedError`, which names the step and the service that did not answer.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

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


#: How long the services take to become ready on an idle development machine, and how long
#: a seeding call may take there; a slower start scales the second by the same factor.
NOMINAL_READY_SECONDS = 5.0
BASE_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 120.0
#: Answers worth asking again: the service is restarting, overloaded or behind a proxy
#: that gave up; any other error is the request's fault and final.
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Patience:
    """How long one seeding call waits for an answer, and how often it is tried."""

    timeout: float = BASE_TIMEOUT_SECONDS
    attempts: int = 3

    @classmethod
    def for_readiness(cls, ready_seconds: float) -> Patience:
        """Services that took three times as long as on an idle machine to become ready
        get three times the usual timeout: on a loaded machine an admin login (one Argon2
        hash) takes seconds, not milliseconds."""
        slowness = max(1.0, ready_seconds / NOMINAL_READY_SECONDS)
        return cls(timeout=min(MAX_TIMEOUT_SECONDS, BASE_TIMEOUT_SECONDS * slowness))

    def times(self, factor: float) -> Patience:
        return Patience(timeout=min(MAX_TIMEOUT_SECONDS, self.timeout * factor),
                        attempts=self.attempts)


def describe_error(error: BaseException) -> str:
    """An error as a person can read it: never empty (an httpx timeout's text often is),
    with the answer's start for an HTTP error."""
    if isinstance(error, CallFailed | SeedError):
        return str(error)
    text = str(error)
    if isinstance(error, httpx.HTTPStatusError):
        text = f"{error.response.status_code} {error.response.text[:300]}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class CallFailed(Exception):
    """A seeding request that failed on its last attempt."""

    def __init__(self, method: str, path: str, attempts: int, patience: Patience,
                 cause: BaseException) -> None:
        super().__init__(method, path)
        self.method, self.path, self.attempts, self.cause = method, path, attempts, cause
        self.patience = patience

    def __str__(self) -> str:
        return (f"{self.method} {self.path}: {describe_error(self.cause)} (attempt "
                f"{self.attempts} of {self.patience.attempts}, each waiting up to "
                f"{self.patience.timeout:.0f} s)")


class SeedError(Exception):
    """Seeding stopped at ``step``, because ``service`` did not answer as it should."""

    def __init__(self, step: str, service: str, cause: BaseException) -> None:
        super().__init__(step, service)
        self.step, self.service, self.cause = step, service, cause

    def __str__(self) -> str:
        return f"{self.step} failed ({self.service} service): {describe_error(self.cause)}"


@asynccontextmanager
async def seed_step(step: str, service: str) -> AsyncIterator[None]:
    """Name the step whatever fails inside belongs to."""
    try:
        yield
    except SeedError:
        raise
    except Exception as error:
        raise SeedError(step, service, error) from error


def _transient(error: BaseException) -> bool:
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code in TRANSIENT_STATUS
    return isinstance(error, httpx.TransportError)


async def send(client: httpx.AsyncClient, method: str, path: str, patience: Patience, *,
               accept: frozenset[int] = frozenset(), **kwargs: Any) -> httpx.Response:
    """One request, tried again on a timeout or a transient answer; a status in
    ``accept`` (409: already there) counts as an answer like a 2xx."""
    retrying = AsyncRetrying(stop=stop_after_attempt(patience.attempts),
                             wait=wait_exponential(multiplier=1, max=10),
                             retry=retry_if_exception(_transient), reraise=True)
    try:
        async for attempt in retrying:
            with attempt:
                response = await client.request(method, path, **kwargs)
                if response.status_code not in accept:
                    response.raise_for_status()
                return response
    except Exception as error:
        raise CallFailed(method, path, retrying.statistics.get("attempt_number", 1),
                         patience, error) from error
    raise AssertionError("unreachable: tenacity either returns or raises")


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


ALREADY_THERE = frozenset({409})


async def admin_token(user_url: str, email: str, password: str, *,
                      patience: Patience = Patience()) -> str:
    """An access token of the bootstrap admin, by the ordinary login."""
    async with seed_step("the admin's login", "user"), \
            httpx.AsyncClient(base_url=user_url, timeout=patience.timeout) as client:
        response = await send(client, "POST", "/auth/login", patience,
                              json={"email": email, "password": password})
        return str(response.json()["access_token"])


async def seed_catalog(product_url: str, token: str, *, concurrency: int = 8,
                       patience: Patience = Patience()) -> SeedResult:
    """Create the demo categories and products that are missing; 409 means already there
    (also when a timed-out attempt had in fact succeeded).

    Straight to the product service rather than through the gateway: the gateway's per-client
    rate limit (rightly) refuses three hundred writes a second from one address."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    created = existing = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=product_url, headers=headers,
                                 timeout=patience.timeout) as client:
        async with seed_step("creating the demo categories", "product"):
            for category in demo_categories():
                await send(client, "POST", "/categories", patience, accept=ALREADY_THERE,
                           json=category)
        gate = asyncio.Semaphore(concurrency)

        async def create(product: dict[str, Any]) -> bool:
            async with gate:
                response = await send(client, "POST", "/products", patience,
                                      accept=ALREADY_THERE, json=product)
            return response.status_code not in ALREADY_THERE

        async with seed_step("creating the demo products", "product"):
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
                         password: str, patience: Patience = Patience()) -> str:
    """Register the demo shopper (409: already registered, also by an attempt that timed
    out after it had succeeded) and log in."""
    email = reviewer_email(handle)
    await send(client, "POST", "/auth/register", patience, accept=ALREADY_THERE, json={
        "email": email, "password": password, "full_name": full_name})
    response = await send(client, "POST", "/auth/login", patience,
                          json={"email": email, "password": password})
    return str(response.json()["access_token"])


async def catalog_ids(client: httpx.AsyncClient,
                      patience: Patience = Patience()) -> dict[str, str]:
    """Every product's id by name, page by page (the product API's cursor)."""
    ids: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        response = await send(client, "GET", "/products", patience, params=params)
        page = response.json()
        ids.update({item["name"]: item["id"] for item in page["items"]})
        if not (cursor := page.get("next_cursor")):
            return ids


async def reviewer_tokens(user_url: str, password: str, *,
                          patience: Patience = Patience()) -> list[str]:
    """An access token for each of :data:`REVIEWERS`, registering them first if need be.
    Password hashing makes this the slow part of seeding reviews, so it can run while the
    catalog is still being seeded; six shoppers hash at once, hence thrice the patience."""
    patience = patience.times(3)
    async with seed_step("registering and logging in the demo shoppers", "user"), \
            httpx.AsyncClient(base_url=user_url, timeout=patience.timeout) as users:
        return list(await asyncio.gather(*(
            reviewer_token(users, handle, name, password, patience)
            for name, handle in REVIEWERS)))


async def seed_reviews(product_url: str, review_url: str, tokens: list[str], *,
                       concurrency: int = 8,
                       patience: Patience = Patience()) -> ReviewSeedResult:
    """Write the demo reviews that are missing, as the shoppers ``tokens`` belong to (see
    :func:`reviewer_tokens`); 409 means that shopper already reviewed the product. Straight
    to the services, like :func:`seed_catalog`, to stay clear of the gateway's rate limit."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with seed_step("reading the catalog", "product"), \
            httpx.AsyncClient(base_url=product_url, timeout=patience.timeout) as products:
        ids = await catalog_ids(products, patience)
    gate = asyncio.Semaphore(concurrency)
    async with seed_step("writing the demo reviews", "review"), \
            httpx.AsyncClient(base_url=review_url, timeout=patience.timeout) as client:

        async def write(product_id: str, reviewer: int, review: dict[str, Any]) -> bool:
            async with gate:
                response = await send(
                    client, "POST", f"/products/{product_id}/reviews", patience,
                    accept=ALREADY_THERE, json=review,
                    headers={"Authorization": f"Bearer {tokens[reviewer]}"})
            return response.status_code not in ALREADY_THERE

        written = await asyncio.gather(*(
            write(ids[product["name"]], reviewer, review)
            for product in demo_products() if product["name"] in ids
            for reviewer, review in demo_reviews(product)))
    created = sum(written)
    return ReviewSeedResult(created=created, existing=len(written) - created,
                            seconds=loop.time() - started)
