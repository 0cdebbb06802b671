"""How fast does the product service answer ``GET /products/{id}``, cached and not, and how
many reservations does it take per second?

Baseline, measured in the same run and served the same way (uvicorn, one worker, on
loopback): a bare ASGI endpoint that returns a product-sized JSON document and does nothing
else. Then the product service, started by uvicorn as in production, against a real
PostgreSQL and Redis (the test bed's, unless URLs are given):

* **cached** — one product read over and over (every read after the first is a Redis hit);
* **uncached** — each read names a product never read before (a cache miss, the shard
  query and the cache fill, every time);
* **reserve** — reservations of one unit with fresh ids, spread over many variants, and all
  on one hot variant (the row lock serialises them).

Each case runs ``--connections`` keep-alive connections (64) for ``--seconds`` after a
warm-up, from a small asyncio HTTP/1.1 client in this process (so the client is cheap next
to the server). The bare endpoint, the core app's constant route and the cached read are
the ratios that matter, and on a machine shared with other work the load moves by a factor
of several within a minute; so those three servers run side by side and are measured in
``--rounds`` interleaved rounds (bare, core, cached, then again in a rotated order), each
case's ``--seconds`` split over the rounds, and each ratio comes from the sums. Printed: a
table of requests/s, the ratio to the bare endpoint, p50/p95/p99 latency and non-2xx
answers; the cached case's ratio per round; one line per case with its ratio and p95; and
whether the goal (cached >= 50 % of bare, p95 <= 20 ms) is met.

    .venv/bin/python bench/product_read.py --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

# -- the baseline: a bare ASGI endpoint ------------------------------------------------------

_BARE_BODY = os.environb.get(b"BENCH_BARE_BODY", b"{}")
_BARE_HEADERS = [(b"content-type", b"application/json"),
                 (b"content-length", str(len(_BARE_BODY)).encode())]


async def bare_app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                   send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """The least an ASGI server can be asked to do: answer with fixed bytes."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": _BARE_HEADERS})
    await send({"type": "http.response.body", "body": _BARE_BODY})


def floor_app() -> Any:
    """The service core's app (logging, metrics, tracing hooks, error model, routing) with
    one route returning the same bytes: what any service costs before it does any work."""
    from fastapi import APIRouter, Response

    from services.core.app import create_service_app
    from services.core.settings import ServiceSettings

    router = APIRouter()

    @router.get("/")
    async def constant() -> Response:
        return Response(_BARE_BODY, media_type="application/json")

    return create_service_app(ServiceSettings(service_name="floor"), routers=[router],
                              uses_database=False, uses_redis=False, uses_bus=False)


# -- servers ---------------------------------------------------------------------------------


@contextmanager
def uvicorn_process(target: str, port: int, env: dict[str, str], *,
                    factory: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """``target`` served by uvicorn in its own process, one worker, uvloop + httptools."""
    from kommerce.testbed.ports import port_open, wait_until

    command = [sys.executable, "-m", "uvicorn", target, "--host", HOST, "--port", str(port),
               "--loop", "uvloop", "--http", "httptools", "--no-access-log",
               "--log-level", "warning", "--app-dir", str(ROOT / "bench")]
    if factory:
        command.append("--factory")
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: port_open(port), timeout=120, what=target,
                       alive=lambda: None if process.poll() is None else "exited")
            yield process
        except Exception:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- the load generator ----------------------------------------------------------------------


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    failures: int

    def add(self, other: Result) -> None:
        """Fold in another round of the same case."""
        self.requests += other.requests
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.failures += other.failures

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


RequestFactory = Callable[[int], bytes]


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def post_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def _connection(port: int, make: RequestFactory, counter: Iterator[int],
                      stop_at: float, record_from: float, result: Result) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            writer.write(make(next(counter)))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            finished = time.perf_counter()
            if started >= record_from:
                result.requests += 1
                result.latencies.append(finished - started)
                if status >= 300:
                    result.failures += 1
    finally:
        writer.close()


async def load(name: str, port: int, make: RequestFactory, *, connections: int,
               seconds: float, warmup: float) -> Result:
    """``connections`` clients, each sending its next request as soon as the last answer
    is in; only requests started after the warm-up count."""
    import itertools

    now = time.perf_counter()
    result = Result(name, 0, seconds, [], 0)
    counter = itertools.count()
    await asyncio.gather(*(_connection(port, make, counter, now + warmup + seconds,
                                       now + warmup, result) for _ in range(connections)))
    return result


# -- the product service's data --------------------------------------------------------------


async def seed(database_url: str, schema: str, products: int, stocked: int) -> dict[str, list[str]]:
    """Products for the uncached reads and variants with deep stock for reservations,
    written with set-based SQL (creating 100 000 products through the API would take longer
    than the benchmark)."""
    from sqlalchemy import text

    from services.core.db import create_engine

    engine = create_engine(database_url, schema, pool_size=1, statement_timeout_ms=0)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO categories (slug, name) VALUES ('bench', 'Bench')"))
            await conn.execute(text("""
                INSERT INTO products (id, category, name, description, attributes)
                SELECT md5('p' || i)::uuid, 'bench', 'Product ' || i,
                       'A product made for the benchmark, of a realistic size.',
                       jsonb_build_object('brand', 'acme', 'series', (i % 50)::text)
                FROM generate_series(1, :n) AS i"""), {"n": products})
            await conn.execute(text("""
                INSERT INTO variants (id, product_id, sku, name, position, attributes,
                                      price_amount, currency, on_hand)
                SELECT md5('v' || i || '-' || k)::uuid, md5('p' || i)::uuid,
                       'B-' || i || '-' || k, 'Size ' || k, k,
                       jsonb_build_object('size', k::text), 1000 + i % 9000, 'EUR',
                       CASE WHEN i <= :stocked THEN 1000000000 ELSE 100 END
                FROM generate_series(1, :n) AS i, generate_series(0, 2) AS k"""),
                {"n": products, "stocked": stocked})
            await conn.execute(text("""
                INSERT INTO sku_claims (sku, product_id, variant_id)
                SELECT sku, product_id, id FROM variants"""))
            product_ids = [str(r[0]) for r in await conn.execute(text(
                "SELECT id FROM products ORDER BY random()"))]
            variant_ids = [str(r[0]) for r in await conn.execute(text(
                "SELECT id FROM variants WHERE on_hand = 1000000000 ORDER BY id"))]
        # Vacuumed now, so autovacuum does not compete with the measurements.
        async with engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()
    return {"products": product_ids, "variants": variant_ids}


# -- the run ---------------------------------------------------------------------------------


@contextmanager
def backing_servers(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """PostgreSQL and Redis: the ones given, or fresh ones from the test bed."""
    if args.database_url and args.redis_url:
        yield args.database_url, args.redis_url
        return
    from kommerce.testbed.postgres import discard, temporary_postgres
    from kommerce.testbed.redis import RedisServer

    postgres = temporary_postgres().start()
    redis_dir = Path(tempfile.mkdtemp(prefix="kommerce-bench-redis-"))
    redis = RedisServer(redis_dir).start()
    try:
        yield postgres.create_database("bench"), redis.url
    finally:
        redis.stop()
        shutil.rmtree(redis_dir, ignore_errors=True)
        discard(postgres)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds of bare / core / cached (see above)")
    parser.add_argument("--products", type=int, default=100_000,
                        help="catalog size; also bounds the uncached reads")
    parser.add_argument("--log-level", default="INFO",
                        help="the service's log level (INFO writes an access line per request, "
                        "as in production)")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    args = parser.parse_args()

    import uvloop

    from kommerce.testbed.ports import free_port
    from services.core.auth import TokenService
    from services.product.settings import ProductSettings

    results: list[Result] = []

    def measure(name: str, port: int, make: RequestFactory) -> Result:
        result = uvloop.run(load(name, port, make, connections=args.connections,
                                 seconds=args.seconds, warmup=args.warmup))
        results.append(result)
        print(f"  {name}: {result.rate:,.0f} req/s", file=sys.stderr)
        return result

    def interleaved(cases: list[tuple[str, int, RequestFactory]]) -> list[Result]:
        """The cases in ``args.rounds`` rounds, rotating which goes first, so that each
        sees the machine as busy as the others; each round's ratios kept for the report."""
        totals = [Result(name, 0, 0.0, [], 0) for name, _, _ in cases]
        rounds = max(1, args.rounds)
        for number in range(rounds):
            order = [(number + i) % len(cases) for i in range(len(cases))]
            this_round: dict[int, Result] = {}
            for index in order:
                name, port, make = cases[index]
                this_round[index] = uvloop.run(load(
                    name, port, make, connections=args.connections,
                    seconds=args.seconds / rounds,
                    warmup=args.warmup if number == 0 else min(args.warmup, 0.5)))
                totals[index].add(this_round[index])
            round_rates.append([this_round[i].rate for i in range(len(cases))])
            print(f"  round {number + 1}/{rounds}: " + ", ".join(
                f"{cases[i][0]} {this_round[i].rate:,.0f} req/s" for i in range(len(cases))),
                file=sys.stderr)
        results.extend(totals)
        return totals

    round_rates: list[list[float]] = []

    with backing_servers(args) as (database_url, redis_url):
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        env = {"KOMMERCE_DATABASE_URL": database_url, "KOMMERCE_REDIS_URL": redis_url,
               "KOMMERCE_DATABASE_SCHEMA": schema, "KOMMERCE_LOG_LEVEL": args.log_level,
               "KOMMERCE_ENVIRONMENT": "test",
               "KOMMERCE_CACHE_PREFIX": f"{schema}:", "KOMMERCE_EVENT_TOPIC_PREFIX": f"{schema}."}
        settings = ProductSettings(**{k.removeprefix("KOMMERCE_").lower(): v
                                      for k, v in env.items()})
        token = TokenService(settings).issue_access("service:order", ["service"]).token
        port = free_port()
        with uvicorn_process("services.product.app:create_app", port, env, factory=True):
            data = uvloop.run(seed(database_url, schema, args.products, stocked=1000))
            products, variants = data["products"], data["variants"]
            hot = products[0]
            sample = orjson.loads(_fetch(port, f"/products/{hot}"))
            body = {"BENCH_BARE_BODY": orjson.dumps(sample).decode(),
                    "KOMMERCE_LOG_LEVEL": args.log_level}

            # The baselines are interleaved with the case they are compared with, so that a
            # machine shared with other work is as busy for all of them.
            bare_port, floor_port = free_port(), free_port()
            hot_request = get_request(f"/products/{hot}")
            with uvicorn_process("product_read:bare_app", bare_port, body), \
                    uvicorn_process("product_read:floor_app", floor_port, body, factory=True):
                bare, _, _ = interleaved([
                    ("bare ASGI endpoint", bare_port, lambda _: get_request("/")),
                    ("core app, constant route", floor_port, lambda _: get_request("/")),
                    ("product, cached", port, lambda _: hot_request)])
            cold = products[1:]
            uncached = measure("product, uncached", port,
                               lambda i: get_request(f"/products/{cold[i % len(cold)]}"))
            auth = {"Authorization": f"Bearer {token}"}

            def reservation(variant_ids: list[str]) -> RequestFactory:
                def make(i: int) -> bytes:
                    body = orjson.dumps({"id": str(uuid.uuid4()), "ttl_seconds": 60, "lines": [
                        {"variant_id": variant_ids[i % len(variant_ids)], "quantity": 1}]})
                    return post_request("/inventory/reservations", body, auth)
                return make

            measure("reserve, 1000 variants", port, reservation(variants))
            measure("reserve, one hot variant", port, reservation(variants[:1]))
        if uncached.requests + args.connections >= len(cold):
            print("  note: the uncached run wrapped around the catalog; raise --products",
                  file=sys.stderr)
    report(bare, results[1:], args, [r[2] / r[0] for r in round_rates if r[0]])


def _fetch(port: int, path: str) -> bytes:
    import httpx

    response = httpx.get(f"http://{HOST}:{port}{path}", timeout=30)
    response.raise_for_status()
    return response.content


def report(bare: Result, results: list[Result], args: argparse.Namespace,
           cached_round_ratios: list[float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"product service, {args.connections} connections, "
                  f"{args.seconds:g} s per case, log level {args.log_level}")
    for column in ("case", "req/s", "vs bare", "p50 ms", "p95 ms", "p99 ms", "non-2xx"):
        table.add_column(column, justify="left" if column == "case" else "right",
                         no_wrap=True)
    for result in [bare, *results]:
        table.add_row(result.name, f"{result.rate:,.0f}", f"{result.rate / bare.rate:.1%}",
                      f"{result.percentile(0.50):.2f}", f"{result.percentile(0.95):.2f}",
                      f"{result.percentile(0.99):.2f}", str(result.failures))
    Console(width=120).print(table)
    print("cached / bare per round: " + ", ".join(f"{r:.1%}" for r in cached_round_ratios))
    for result in results:
        print(f"{result.name}: {result.rate / bare.rate:.1%} of bare "
              f"({result.rate:,.0f} / {bare.rate:,.0f} req/s), "
              f"p95 {result.percentile(0.95):.2f} ms")
    cached = next(r for r in results if r.name == "product, cached")
    ratio, p95 = cached.rate / bare.rate, cached.percentile(0.95)
    goal = ratio >= 0.5 and p95 <= 20
    print(f"goal (cached >= 50% of bare and p95 <= 20 ms): {'met' if goal else 'NOT met'} — "
          f"cached {ratio:.1%} of bare, p95 {p95:.2f} ms; "
          f"mean latency cached {statistics.fmean(cached.latencies) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
