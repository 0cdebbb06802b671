"""How fast do the two search engines answer full-text + facet queries, and how fast do they
take documents in?

Everything runs in this process against real servers (the test bed's PostgreSQL and
Elasticsearch node, started for the run unless URLs are given), at the engine interface
(``SearchBackend``), so HTTP and analytics writes are not in the numbers.

Baselines, measured in the same run on the same servers:

* **queries** — a primary-key lookup of one product document in PostgreSQL (the cheapest
  useful read); every search row shows its p50 as a multiple of the baseline's p50;
* **indexing** — the same generated rows inserted into a bare table with no indexes (what
  writing the rows costs at all); engine rows show docs/s as a fraction of it.

Cases: bulk load of ``--products`` generated products (PostgreSQL store with its tsvector,
GIN and trigram indexes; Elasticsearch through a full alias rebuild from that store); events
applied one per transaction as the consumer does (``--events``); searches of one or two
words with every facet aggregated (``--queries``, one at a time, after a warm-up), the same
with a category filter, and autocomplete. The store is ANALYZEd after the bulk load (as
autovacuum would do shortly after), so plans are made for the table as it is.

    .venv/bin/python bench/search_latency.py --products 100000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert, select, text

from services.core import migrations
from services.core.db import Database
from services.search.backend import SearchBackend, SearchQuery
from services.search.documents import ProductDocument
from services.search.elastic import ElasticsearchBackend
from services.search.models import MIGRATIONS
from services.search.postgres import PostgresBackend
from services.search.repository import documents
from services.search.service import SearchIndexer
from services.search.settings import SearchSettings

console = Console(width=160)

WORDS = (
    "trail", "road", "running", "walking", "leather", "cotton", "wool", "linen", "wireless",
    "bluetooth", "smart", "portable", "compact", "classic", "modern", "vintage", "premium",
    "light", "heavy", "soft", "warm", "waterproof", "shoes", "boots", "jacket", "shirt",
    "socks", "headphones", "speaker", "laptop", "keyboard", "mouse", "monitor", "lamp",
    "chair", "table", "desk", "bottle", "mat", "bag", "backpack", "watch", "camera", "phone",
    "charger", "cable", "kettle", "mug", "pan", "knife", "blender",
)
CATEGORIES = [f"category-{i:02d}" for i in range(20)]
BRANDS = [f"Brand{i:02d}" for i in range(50)]
COLORS = ["red", "blue", "black", "white", "green", "grey", "silver", "brown"]
SIZES = ["S", "M", "L", "XL"]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def generated(n: int, seed: int = 7) -> Iterator[ProductDocument]:
    rng = random.Random(seed)
    for i in range(n):
        pid = uuid.UUID(int=rng.getrandbits(128), version=4)
        name = " ".join(rng.sample(WORDS, 3)).title()
        colors = rng.sample(COLORS, rng.randint(1, 3))
        price = rng.randint(300, 60000)
        variants = [{"id": uuid.uuid5(pid, c), "sku": f"SKU-{i}-{c}", "price": price,
                     "currency": "EUR", "available": rng.choice((0, 3, 10))} for c in colors]
        when = EPOCH - timedelta(minutes=i)
        yield ProductDocument(
            id=pid, version=1, name=name,
            description=" ".join(rng.choices(WORDS, k=12)),
            category=rng.choice(CATEGORIES), brand=rng.choice(BRANDS),
            attributes={"color": sorted(colors), "size": sorted(rng.sample(SIZES, 2))},
            variants=variants, created_at=when, updated_at=when)


def plain_row(document: ProductDocument) -> dict[str, Any]:
    data = document.model_dump(mode="json")
    return {"id": document.id, "version": 1, "name": document.name,
            "description": document.description, "category": document.category,
            "brand": document.brand, "attributes": data["attributes"],
            "variants": data["variants"], "images": [],
            "attribute_pairs": document.attribute_pairs, "price_min": document.price_min,
            "price_max": document.price_max, "currency": document.currency,
            "in_stock": document.in_stock, "created_at": document.created_at,
            "updated_at": document.updated_at}


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def timed(call: Callable[[], Awaitable[Any]], runs: int, warmup: int = 20
                ) -> list[float]:
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def bulk_insert(database: Database, table: Any, n: int, batch: int = 2000) -> float:
    """Seconds to insert ``n`` generated rows in batches of ``batch``."""
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for document in generated(n):
        rows.append(plain_row(document))
        if len(rows) == batch:
            async with database.session() as session, session.begin():
                await session.execute(insert(table), rows)
            rows = []
    if rows:
        async with database.session() as session, session.begin():
            await session.execute(insert(table), rows)
    return time.perf_counter() - started


async def apply_events(indexer: SearchIndexer, n: int, offset_seed: int) -> float:
    """Seconds to apply ``n`` product.updated events, one transaction each."""
    payloads = []
    for document in generated(n, seed=offset_seed):
        data = document.model_dump(mode="json")
        payloads.append({**data, "attributes": {"brand": document.brand}, "images": [],
                         "variants": [{"id": v["id"], "sku": v["sku"], "name": data["name"],
                                       "attributes": {"color": c},
                                       "price": {"amount": v["price"], "currency": "EUR"},
                                       "stock": {"on_hand": v["available"], "reserved": 0,
                                                 "available": v["available"]}}
                                      for v, c in zip(data["variants"],
                                                      data["attributes"]["color"],
                                                      strict=False)]})
    started = time.perf_counter()
    for payload in payloads:
        async with indexer.database.session() as session, session.begin():
            await indexer.product_changed(session, payload)
    return time.perf_counter() - started


@contextmanager
def servers(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    if args.database_url and args.elasticsearch_url:
        yield args.database_url, args.elasticsearch_url
        return
    from kommerce.testbed.elasticsearch import SearchEngine
    from kommerce.testbed.postgres import discard, temporary_postgres

    postgres = temporary_postgres().start()
    es_dir = Path(tempfile.mkdtemp(prefix="kommerce-bench-es-"))
    engine = SearchEngine(es_dir).start()
    try:
        yield postgres.create_database("bench"), engine.url
    finally:
        engine.stop()
        shutil.rmtree(es_dir, ignore_errors=True)
        discard(postgres)


async def run(args: argparse.Namespace, database_url: str, es_url: str) -> None:
    settings = SearchSettings(database_url=database_url, database_schema="search_bench",
                              database_statement_timeout_ms=0, log_json=False)
    database = Database.from_settings(settings)
    await migrations.upgrade(database, MIGRATIONS)
    async with database.engine.begin() as conn:
        await conn.execute(text("TRUNCATE search_documents, search_queries CASCADE"))
        await conn.execute(text("DROP TABLE IF EXISTS bench_plain"))
        await conn.execute(text(
            "CREATE TABLE bench_plain (LIKE search_documents INCLUDING DEFAULTS) "))
        await conn.execute(text(
            "ALTER TABLE bench_plain DROP COLUMN document, DROP COLUMN fuzzy_text, "
            "DROP COLUMN title"))
    postgres = PostgresBackend(database)
    elastic = ElasticsearchBackend(es_url, f"bench-{uuid.uuid4().hex[:8]}", timeout=60)
    await elastic.start()
    n = args.products
    index_rows: list[tuple[str, float]] = []

    bare = await _reflect(database, "bench_plain")
    console.print(f"loading {n} products …")
    index_rows.append(("baseline: bare table insert", n / await bulk_insert(database, bare, n)))
    index_rows.append(("postgres: store bulk insert (tsvector, GIN, trigram)",
                       n / await bulk_insert(database, documents, n)))
    # What autovacuum does soon after a bulk load anyway; measuring before it would time
    # plans made for an empty table.
    async with database.engine.begin() as conn:
        await conn.execute(text("ANALYZE search_documents"))
    started = time.perf_counter()

    async def everything() -> AsyncIterator[Any]:
        from services.search.repository import live_batches
        async for batch in live_batches(database, batch_size=2000):
            yield batch

    await elastic.rebuild(everything())
    index_rows.append(("elasticsearch: alias rebuild from the store (bulk)",
                       n / (time.perf_counter() - started)))
    for name, backend in (("postgres", postgres), ("elasticsearch", elastic)):
        indexer = SearchIndexer(database, backend)
        seconds = await apply_events(indexer, args.events, seed_for(name))
        index_rows.append((f"{name}: events, one transaction each", args.events / seconds))
    await elastic.refresh()

    rng = random.Random(11)
    queries = [" ".join(rng.sample(WORDS, rng.choice((1, 2)))) for _ in range(args.queries)]
    prefixes = [rng.choice(WORDS)[:3] for _ in range(args.queries)]
    some_id = (await _first_id(database))

    async def baseline() -> None:
        async with database.session() as session:
            (await session.execute(select(documents).where(documents.c.id == some_id))).one()

    latency: list[tuple[str, list[float]]] = [
        ("baseline: primary-key lookup", await timed(baseline, args.queries))]
    for name, backend in (("postgres", postgres), ("elasticsearch", elastic)):
        latency.append((f"{name}: full-text + facets",
                        await _cycle(backend, [SearchQuery(text=q) for q in queries])))
        latency.append((f"{name}: full-text + facets, category filter", await _cycle(
            backend, [SearchQuery(text=q, categories=[rng.choice(CATEGORIES)])
                      for q in queries])))
        latency.append((f"{name}: autocomplete", await _cycle_complete(backend, prefixes)))
    await elastic.close()
    await database.dispose()
    _print(n, index_rows, latency)


def seed_for(name: str) -> int:
    return 1000 + len(name)


async def _reflect(database: Database, name: str) -> Any:
    from sqlalchemy import MetaData, Table

    metadata = MetaData()
    async with database.engine.connect() as conn:
        return await conn.run_sync(lambda sync: Table(name, metadata, autoload_with=sync))


async def _first_id(database: Database) -> uuid.UUID:
    async with database.session() as session:
        return (await session.execute(select(documents.c.id).limit(1))).scalar_one()


async def _cycle(backend: SearchBackend, queries: list[SearchQuery]) -> list[float]:
    iterator = iter(queries * 2)
    return await timed(lambda: backend.search(next(iterator)), len(queries) - 20)


async def _cycle_complete(backend: SearchBackend, prefixes: list[str]) -> list[float]:
    iterator = iter(prefixes * 2)
    return await timed(lambda: backend.autocomplete(next(iterator), 8), len(prefixes) - 20)


def _print(n: int, index_rows: list[tuple[str, float]],
           latency: list[tuple[str, list[float]]]) -> None:
    table = Table(title=f"indexing, {n} generated products")
    for column in ("case", "docs/s", "vs baseline"):
        table.add_column(column, justify="right" if column != "case" else "left")
    base = index_rows[0][1]
    for name, rate in index_rows:
        table.add_row(name, f"{rate:,.0f}", f"{rate / base:.2f}x")
    console.print(table)
    table = Table(title=f"query latency (ms), {n} products, one query at a time")
    for column in ("case", "runs", "p50", "p95", "p99", "mean", "p50 vs baseline"):
        table.add_column(column, justify="right" if column != "case" else "left")
    base_p50 = percentile(latency[0][1], 50)
    for name, samples in latency:
        table.add_row(name, str(len(samples)), f"{percentile(samples, 50):.1f}",
                      f"{percentile(samples, 95):.1f}", f"{percentile(samples, 99):.1f}",
                      f"{statistics.fmean(samples):.1f}",
                      f"{percentile(samples, 50) / base_p50:.0f}x")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--elasticsearch-url", default=None)
    args = parser.parse_args()
    with servers(args) as (database_url, es_url):
        asyncio.run(run(args, database_url, es_url))


if __name__ == "__main__":
    main()
