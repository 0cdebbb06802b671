"""What does one service-to-service call cost the caller in CPU?

The order service makes five calls per checkout (prices, reserve, charge, ship, commit) and
the payment service one to Stripe, so the client's own CPU per call is part of what an order
costs. Measured here, against one bare ASGI server on loopback (uvicorn, httptools, uvloop,
in its own process, so its CPU is not counted): httpx with its own transport (httpcore,
h11) — the baseline —, httpx over aiohttp (:class:`services.core.http.AiohttpBackedTransport`,
what :meth:`ServiceClient.stream <services.core.http.ServiceClient.stream>` uses for the
gateway), :meth:`ServiceClient.request <services.core.http.ServiceClient.request>` (aiohttp
answering as an ``httpx.Response``, with the breaker, metrics and trace headers: what every
other call uses), and aiohttp alone. Each posts a small
JSON body with a bearer token and parses the JSON answer, 8 calls in flight; the rounds
alternate so a busy machine slows all alike. Printed: CPU µs per call of this process and
each client's ratio to the baseline.

    .venv/bin/python bench/http_client.py --calls 3000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import httpx  # noqa: E402

from kommerce.testbed.ports import free_port, wait_until  # noqa: E402
from services.core.http import AiohttpBackedTransport, HttpClients  # noqa: E402

BARE_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"status": "active", "id": "r-1"}'})
'''
BODY = {"id": "r-1", "ttl_seconds": 1800, "lines": [{"variant_id": "v-1", "quantity": 1}]}
HEADERS = {"authorization": "Bearer token", "idempotency-key": "order-1-reserve"}

Call = Callable[[], Awaitable[None]]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(call: Call, calls: int, in_flight: int = 8) -> float:
    """CPU µs per call."""
    slots = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with slots:
            await call()

    before = cpu_seconds()
    await asyncio.gather(*(one() for _ in range(calls)))
    return (cpu_seconds() - before) * 1e6 / calls


async def bench(url: str, calls: int, rounds: int) -> dict[str, list[float]]:
    own = httpx.AsyncClient(base_url=url)
    over_aiohttp = httpx.AsyncClient(base_url=url, transport=AiohttpBackedTransport())
    bare = aiohttp.ClientSession(url)
    services = HttpClients()
    service_client = services.client("bench", url)

    async def with_httpx(client: httpx.AsyncClient) -> None:
        (await client.post("/reservations", json=BODY, headers=HEADERS)).json()

    async def with_aiohttp() -> None:
        async with bare.post("/reservations", json=BODY, headers=HEADERS) as response:
            await response.json()

    async def with_service_client() -> None:
        (await service_client.post("/reservations", json=BODY, headers=HEADERS)).json()

    clients: dict[str, Call] = {
        "httpx, own transport (baseline)": lambda: with_httpx(own),
        "httpx over aiohttp (.stream)": lambda: with_httpx(over_aiohttp),
        "ServiceClient.request": with_service_client,
        "aiohttp alone": with_aiohttp,
    }
    results: dict[str, list[float]] = {name: [] for name in clients}
    try:
        for call in clients.values():  # warm-up: connections, caches
            await measure(call, 200)
        for _ in range(rounds):
            for name, call in clients.items():
                results[name].append(await measure(call, calls))
    finally:
        await own.aclose()
        await over_aiohttp.aclose()
        await bare.close()
        await services.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import uvloop

    with tempfile.TemporaryDirectory(prefix="kommerce-bench-http-") as folder:
        (Path(folder) / "bareapp.py").write_text(BARE_APP)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", folder, "bareapp:app",
             "--port", str(port), "--log-level", "warning", "--no-access-log",
             "--loop", "uvloop", "--http", "httptools"])
        try:
            wait_until(lambda: _answers(port), timeout=20, what="the bare server")
            started = time.perf_counter()
            results = uvloop.run(bench(f"http://127.0.0.1:{port}", args.calls, args.rounds))
        finally:
            server.terminate()
            server.wait(10)
    baseline = sum(next(iter(results.values()))) / args.rounds
    print(f"CPU per call, mean of {args.rounds} rounds of {args.calls} calls "
          f"({time.perf_counter() - started:.0f} s):")
    for name, values in results.items():
        mean = sum(values) / len(values)
        print(f"  {name:36s} {mean:7.0f} µs   {mean / baseline:5.2f}x the baseline   "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
