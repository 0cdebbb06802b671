"""How many checkout sagas per second does the platform carry, and how long does a shopper
wait from the checkout request to CONFIRMED?

Everything real and on this machine: the test bed's PostgreSQL, Redis, a Kafka broker (the
event bus) and stripe-mock (the payment service on its Stripe backend, through the same
recording proxy the tests use, which passes stripe-mock's answers on as Stripe's test mode
would confirm ``pm_card_visa``); the product, payment, shipping and order services each in
its own process (``python -m services.<name>``, one uvicorn worker), started exactly as the
tests start them (``kommerce/testbed/checkout_platform.py``).

Load is open-loop: checkouts are sent at a fixed rate for ``--seconds`` (each its own
shopper token, one line of a random variant among ``--variants`` with deep stock), whatever
the answers, so a platform that falls behind shows it as growing latency rather than by
slowing the client down. Each rate is first offered for ``--warmup`` seconds unmeasured,
running straight into the measured seconds: measured is the rate's steady state, not the
pools growing to it (without it, the first run at a new rate showed a p95 of 1.4 s where a
second run at the same rate showed 0.3 s).

An order's latency runs from just before its ``POST /checkout`` to the moment the order
service stored CONFIRMED (``orders.updated_at``, written by the saga in the transaction that
confirms). Printed per offered rate: orders/s achieved (confirmed
orders over the span from the first request to the last confirmation), p50/p95/p99 of that
latency, the p50 of the checkout request alone (202 Accepted: the order, its saga and the
first command committed), and orders that ended anywhere but CONFIRMED. "vs offered" is the
achieved rate over the offered one: 100 % means the platform kept up. The CPU columns are
each service process's user + system CPU over the run divided by the orders confirmed: what
an order costs, which — unlike the rates — does not depend on what else the machine runs.
"whole machine" is every core's busy time over the run (/proc/stat) per order: the services,
PostgreSQL, Kafka, stripe-mock, this load generator, the kernel — and anything else that ran.

The baseline (``--baseline-rate``, default the first rate), run right after that rate: the
order service restarted with ``KOMMERCE_SAGA_INLINE_CONCURRENCY=0``, so every saga command
waits for its delivery by the bus, as before commands were also run inline on commit (each
step then also waits out the outbox relay's linger, ``KOMMERCE_OUTBOX_LINGER_SECONDS``).

    .venv/bin/python bench/checkout.py --rates 5,10,25,50 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

from kommerce.testbed.checkout_platform import (  # noqa: E402
    SERVICES,
    CheckoutPlatform,
    StripeRecorder,
    checkout_body,
    checkout_platform,
    stock_catalog,
)

FINAL = ("CONFIRMED", "CANCELLED")
MACHINE = "machine"

#: The tests shorten the saga's deadlines and the outbox's idle polling to see recovery
#: quickly; measured here is the platform as it ships (a step is resent after 30 s, overdue
#: sagas looked for each second, an idle outbox looked at twice a second — a commit wakes
#: its relay at once either way).
_RELAY = {"KOMMERCE_OUTBOX_POLL_INTERVAL_SECONDS": "0.5"}
PRODUCTION_TIMING = {"product": _RELAY, "payment": _RELAY, "shipping": _RELAY,
                     "order": {**_RELAY, "KOMMERCE_SAGA_STEP_TIMEOUT_SECONDS": "30",
                               "KOMMERCE_SAGA_TIMER_INTERVAL_SECONDS": "1"}}


@dataclass
class Run:
    offered: float
    seconds: float
    mode: str = "inline + bus"
    sent: dict[str, float] = field(default_factory=dict)  # order id -> request start (epoch)
    accept_latencies: list[float] = field(default_factory=list)
    refused: int = 0
    confirmed_at: dict[str, float] = field(default_factory=dict)
    not_confirmed: int = 0
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # service -> CPU used

    def cpu_ms_per_order(self, service: str) -> float:
        return self.cpu_seconds.get(service, 0.0) * 1000 / max(1, len(self.confirmed_at))

    @property
    def latencies_ms(self) -> list[float]:
        return sorted((self.confirmed_at[o] - self.sent[o]) * 1000
                      for o in self.confirmed_at)

    @property
    def achieved(self) -> float:
        if not self.confirmed_at:
            return 0.0
        span = max(self.confirmed_at.values()) - min(self.sent.values())
        return len(self.confirmed_at) / span

    def percentile(self, q: float) -> float:
        values = self.latencies_ms
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q * len(values)))]


@contextmanager
def backing_servers() -> Iterator[tuple[str, str, str, str]]:
    """Fresh PostgreSQL, Redis, Kafka and stripe-mock from the test bed."""
    from kommerce.testbed.kafka import KafkaBroker
    from kommerce.testbed.postgres import discard, temporary_postgres
    from kommerce.testbed.redis import RedisServer
    from kommerce.testbed.stripe_mock import StripeMock

    scratch = Path(tempfile.mkdtemp(prefix="kommerce-bench-checkout-"))
    with ExitStack() as stack:
        postgres = temporary_postgres().start()
        stack.callback(discard, postgres)
        redis = RedisServer(scratch / "redis").start()
        stack.callback(redis.stop)
        kafka = KafkaBroker(scratch / "kafka").start()
        stack.callback(kafka.stop)
        stripe = StripeMock().start()
        stack.callback(stripe.stop)
        stack.callback(shutil.rmtree, scratch, True)
        yield (postgres.create_database("bench_checkout"), redis.url,
               kafka.bootstrap_servers, stripe.api_base)


async def offer(client: aiohttp.ClientSession, platform: CheckoutPlatform,
                variants: list[str], rate: float, seconds: float) -> Run:
    """Send ``rate`` checkouts a second for ``seconds``, each on schedule (with aiohttp, the
    cheapest client at hand: the load generator shares the machine it measures)."""
    run = Run(rate, seconds)
    url = f"{platform['order'].url}/checkout"
    count = int(rate * seconds)
    tokens = [platform.token(f"bench-{uuid.uuid4().hex[:8]}", "customer")
              for _ in range(count)]

    async def one(i: int) -> None:
        headers = {**tokens[i], "Idempotency-Key": uuid.uuid4().hex}
        body = checkout_body(random.choice(variants))
        started_wall, started = time.time(), time.perf_counter()
        try:
            async with client.post(url, json=body, headers=headers) as response:
                if response.status != 202:
                    run.refused += 1
                    return
                accepted = await response.json()
        except aiohttp.ClientError:
            run.refused += 1
            return
        run.accept_latencies.append((time.perf_counter() - started) * 1000)
        run.sent[accepted["id"]] = started_wall

    begin = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return run


async def settle(engine: AsyncEngine, platform: CheckoutPlatform, run: Run,
                 within: float = 300.0) -> None:
    """Wait until every order of the run is final, then read when each was confirmed."""
    schema = platform.schemas["order"]
    ids = list(run.sent)
    deadline = time.monotonic() + within
    while True:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                f'SELECT id::text, status, updated_at FROM "{schema}".orders '
                "WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids})).all()
        if all(r[1] in FINAL for r in rows) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    for order_id, status, updated_at in rows:
        if status == "CONFIRMED":
            run.confirmed_at[order_id] = _epoch(updated_at)
        else:
            run.not_confirmed += 1


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy so far (/proc/stat): the
    services, PostgreSQL, Kafka, stripe-mock, this load generator and the kernel alike."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(platform: CheckoutPlatform) -> dict[str, float]:
    """User + system CPU each service process has used so far (from /proc): what an order
    costs, independent of how busy the rest of the machine is."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name in SERVICES:
        process = platform[name].process
        assert process is not None and process.pid is not None
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) / ticks
    used[MACHINE] = machine_busy_seconds()
    return used


async def bench(platform: CheckoutPlatform, args: argparse.Namespace) -> list[Run]:
    engine = create_async_engine(platform.database_url)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    try:
        async with httpx.AsyncClient(timeout=30, limits=limits) as setup, \
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                      connector=aiohttp.TCPConnector(limit=256)) as client:
            catalog = await stock_catalog(setup, platform, variants=args.variants,
                                          stock=1_000_000_000)
            variants = catalog.variant_ids
            # Warm-up: connections, Kafka consumer assignments, cold code.
            warm = await offer(client, platform, variants, 10, args.warmup)
            await settle(engine, platform, warm)
            runs = []

            async def measure(rate: float, mode: str) -> None:
                # The same rate for --warmup seconds first, unmeasured and running straight
                # into the measured window: the pools grow to this rate's concurrency (each
                # new PostgreSQL connection prepares every statement again) before the
                # clock starts, so what is measured is the rate's steady state.
                await offer(client, platform, variants, rate, args.warmup)
                before = cpu_seconds(platform)
                run = await offer(client, platform, variants, rate, args.seconds)
                run.mode = mode
                await settle(engine, platform, run)
                after = cpu_seconds(platform)
                run.cpu_seconds = {name: after[name] - before[name] for name in after}
                runs.append(run)
                print(f"  {rate:g}/s offered ({mode}): {run.achieved:.1f}/s confirmed, "
                      f"p95 {run.percentile(0.95):.0f} ms", file=sys.stderr)

            async def restart_order(inline: bool) -> None:
                order = platform["order"]
                order.stop()
                order.env["KOMMERCE_SAGA_INLINE_CONCURRENCY"] = "32" if inline else "0"
                order.start()
                await asyncio.to_thread(order.wait_ready)

            for rate in args.rates:
                await measure(rate, "inline + bus")
                if rate == args.baseline_rate:
                    # The baseline, right after the same rate so the machine is as busy:
                    # the same order service with every saga command carried by the bus
                    # alone (one consumer per process, one event at a time).
                    await restart_order(inline=False)
                    await measure(rate, "bus only")
                    await restart_order(inline=True)
            return runs
    finally:
        await engine.dispose()


def report(runs: list[Run], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"checkout saga to CONFIRMED (Kafka, PostgreSQL, stripe-mock), "
                  f"{args.seconds:g} s per rate, open loop")
    for column in ("saga commands", "offered/s", "orders/s", "vs offered", "p50 ms", "p95 ms",
                   "p99 ms",
                   "202 p50 ms", "not confirmed", "refused",
                   *(f"CPU ms/order {name}" for name in SERVICES),
                   "CPU ms/order whole machine"):
        table.add_column(column, justify="left" if column == "saga commands" else "right")
    for run in runs:
        accept = statistics.median(run.accept_latencies) if run.accept_latencies else 0.0
        table.add_row(run.mode, f"{run.offered:g}", f"{run.achieved:.1f}",
                      f"{run.achieved / run.offered:.0%}", f"{run.percentile(0.50):.0f}",
                      f"{run.percentile(0.95):.0f}", f"{run.percentile(0.99):.0f}",
                      f"{accept:.0f}", str(run.not_confirmed), str(run.refused),
                      *(f"{run.cpu_ms_per_order(name):.0f}" for name in (*SERVICES, MACHINE)))
    Console(width=200).print(table)
    measured = [r for r in runs if r.mode == "inline + bus"]
    best = max(measured, key=lambda r: r.achieved)
    met = [r for r in measured if r.achieved >= 50 and r.percentile(0.95) <= 500
           and r.not_confirmed == r.refused == 0]
    print(f"goal (>= 50 orders/s with p95 <= 500 ms): "
          f"{'met at ' + ', '.join(f'{r.offered:g}/s' for r in met) if met else 'NOT met'}; "
          f"best throughput {best.achieved:.1f} orders/s at {best.offered:g}/s offered")
    baseline = next((r for r in runs if r.mode != "inline + bus"), None)
    same = next((r for r in measured if baseline and r.offered == baseline.offered), None)
    if baseline is not None and same is not None and baseline.achieved:
        print(f"vs the bus-only baseline at {baseline.offered:g}/s offered: "
              f"{same.achieved / baseline.achieved:.1f}x the orders/s, p50 "
              f"{same.percentile(0.5):.0f} ms vs {baseline.percentile(0.5):.0f} ms, p95 "
              f"{same.percentile(0.95):.0f} ms vs {baseline.percentile(0.95):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="5,10,25,50",
                        help="offered checkouts per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of load before each measured rate (and at 10/s once)")
    parser.add_argument("--variants", type=int, default=50)
    parser.add_argument("--baseline-rate", type=float, default=None,
                        help="also run this rate with saga commands on the bus alone "
                        "(default: the first rate; 0 skips the baseline)")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    if args.baseline_rate is None:
        args.baseline_rate = args.rates[0]

    import uvloop

    with backing_servers() as (database_url, redis_url, kafka, stripe_base), \
            StripeRecorder(stripe_base).serving() as stripe_proxy, \
            tempfile.TemporaryDirectory(prefix="kommerce-bench-logs-") as logs, \
            checkout_platform(database_url=database_url, redis_url=redis_url,
                              kafka_bootstrap=kafka, stripe_api_base=stripe_proxy.url,
                              log_dir=Path(logs), extra_env=PRODUCTION_TIMING) as platform:
        runs = uvloop.run(bench(platform, args))
    report(runs, args)


if __name__ == "__main__":
    main()
