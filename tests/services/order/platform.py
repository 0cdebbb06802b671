"""The checkout platform as separate processes: product, payment (Stripe backend), shipping
and order, each ``python -m services.<name>`` on a loopback port, as ``kommerce up`` and a
cluster run them — so the order service can be killed and restarted like a crashed pod.

Used by the fault and card-number tests here and by ``bench/checkout.py``. Every process
shares one PostgreSQL (a schema each), Redis, the event bus (Kafka, under a topic prefix of
this run's own) and the JWT key, so the order service's service token is accepted by the
others and a test can mint tokens for shoppers and the catalog's admin.

:class:`StripeRecorder` is a loopback proxy in front of stripe-mock that notes each request's
method, path and ``Idempotency-Key`` before passing it on: stripe-mock keeps no state, so this
is how a test counts the charges the platform actually asked Stripe for. stripe-mock checks
every request against Stripe's API spec but answers from fixtures, and its PaymentIntent
fixture is always ``requires_payment_method`` (which the payment service rightly reads as a
decline); Stripe in test mode confirms ``pm_card_visa`` as ``succeeded``, so the proxy sets
that one field on a confirmed intent's answer and passes everything else through unchanged.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from kommerce.testbed.ports import free_port, wait_until
from kommerce.testbed.process import ServerProcess

ROOT = Path(__file__).resolve().parents[3]
JWT_SECRET = "checkout-platform-test-secret-0123456789abcdef"
SERVICES = ("product", "payment", "shipping", "order")


# -- Stripe, recorded ------------------------------------------------------------------------


@dataclass
class StripeCall:
    method: str
    path: str
    idempotency_key: str | None
    body: bytes


@dataclass
class StripeRecorder:
    """A loopback proxy to stripe-mock that remembers what was sent through it."""

    upstream: str
    url: str = ""
    calls: list[StripeCall] = field(default_factory=list)

    def keys(self, method: str, path: str) -> list[str]:
        """Idempotency keys of the requests to exactly ``path`` (``/v1/payment_intents``)."""
        return [c.idempotency_key or "" for c in self.calls
                if c.method == method and c.path.split("?")[0] == path]

    @contextmanager
    def serving(self) -> Iterator[StripeRecorder]:
        recorder = self
        lock = threading.Lock()
        parsed = urllib.parse.urlsplit(self.upstream)
        recorder_host, recorder_port = parsed.hostname or "127.0.0.1", parsed.port or 80

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Stripe's API is

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with lock:
                    recorder.calls.append(StripeCall(self.command, self.path,
                                                     self.headers.get("Idempotency-Key"),
                                                     body or b""))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                status, data, kind = self._upstream_answer(body, headers)
                if status == 200 and _confirms_intent(self.command, self.path, body):
                    data = _as_succeeded(data)
                self.send_response(status)
                self.send_header("Content-Type", kind or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _upstream_answer(self, body: bytes | None,
                                 headers: dict[str, str]) -> tuple[int, bytes, str | None]:
                """stripe-mock's answer over this handler's own kept-alive connection (one
                new connection per call cost the machine more than the call)."""
                try:
                    return self._ask_upstream(body, headers)
                except (ConnectionError, http.client.HTTPException):
                    self._close_upstream()  # stripe-mock closed it: once more, on a new one
                    return self._ask_upstream(body, headers)

            def _ask_upstream(self, body: bytes | None,
                              headers: dict[str, str]) -> tuple[int, bytes, str | None]:
                if getattr(self, "upstream", None) is None:
                    self.upstream = http.client.HTTPConnection(recorder_host, recorder_port,
                                                               timeout=30)
                self.upstream.request(self.command, self.path, body=body, headers=headers)
                answer = self.upstream.getresponse()
                return answer.status, answer.read(), answer.getheader("Content-Type")

            def _close_upstream(self) -> None:
                if getattr(self, "upstream", None) is not None:
                    self.upstream.close()
                    self.upstream = None

            def finish(self) -> None:
                super().finish()
                self._close_upstream()

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


def _confirms_intent(method: str, path: str, body: bytes | None) -> bool:
    path = path.split("?")[0]
    if method != "POST" or not path.startswith("/v1/payment_intents"):
        return False
    return path.endswith("/confirm") or (path == "/v1/payment_intents"
                                         and b"confirm=true" in (body or b""))


def _as_succeeded(data: bytes) -> bytes:
    intent = json.loads(data)
    intent["status"] = "succeeded"
    return json.dumps(intent).encode()


# -- the services ----------------------------------------------------------------------------


@dataclass
class ServiceHandle:
    """One service process; restartable on the same port with the same settings."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = ServerProcess(
            self.name, [sys.executable, "-m", f"services.{self.name}"],
            log_path=self.log_path, env=self.env, cwd=ROOT).start()

    def wait_ready(self, timeout: float = 90.0) -> None:
        process = self.process
        assert process is not None

        def ready() -> bool:
            return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200

        wait_until(ready, timeout=timeout, what=f"the {self.name} service", interval=0.1,
                   alive=process.exit_problem)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, in-flight work is simply lost, as in a crash."""
        process, self.process = self.process, None
        assert process is not None and process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.stop(timeout=5)  # reaps it (it is already gone)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=20)
            self.process = None


@dataclass
class CheckoutPlatform:
    services: dict[str, ServiceHandle]
    database_url: str
    schemas: dict[str, str]
    log_dir: Path
    jwt_secret: str = JWT_SECRET

    def __getitem__(self, name: str) -> ServiceHandle:
        return self.services[name]

    def token(self, subject: str, *roles: str) -> dict[str, str]:
        from services.core.auth import TokenService
        from services.core.settings import ServiceSettings

        settings = ServiceSettings(jwt_secret=self.jwt_secret)  # type: ignore[arg-type]
        issued = TokenService(settings).issue_access(subject, roles)
        return {"Authorization": f"Bearer {issued.token}"}

    def logs(self) -> dict[str, str]:
        return {path.name: path.read_text(errors="replace")
                for path in sorted(self.log_dir.glob("*.log"))}


@contextmanager
def checkout_platform(*, database_url: str, redis_url: str, kafka_bootstrap: str,
                      stripe_api_base: str, log_dir: Path,
                      extra_env: Mapping[str, Mapping[str, str]] | None = None,
                      ) -> Iterator[CheckoutPlatform]:
    """Start the four services (together, then wait for each) and stop them afterwards."""
    run = uuid.uuid4().hex[:8]
    ports = {name: free_port() for name in SERVICES}
    schemas = {name: f"{name}_{run}" for name in SERVICES}
    common = {
        "KOMMERCE_ENVIRONMENT": "test", "KOMMERCE_HOST": "127.0.0.1",
        "KOMMERCE_DATABASE_URL": database_url, "KOMMERCE_REDIS_URL": redis_url,
        "KOMMERCE_EVENT_BUS": "kafka", "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KOMMERCE_EVENT_TOPIC_PREFIX": f"co{run}.", "KOMMERCE_JWT_SECRET": JWT_SECRET,
        "KOMMERCE_OUTBOX_POLL_INTERVAL_SECONDS": "0.05", "KOMMERCE_LOG_LEVEL": "INFO",
        "KOMMERCE_KAFKA_TOPIC_PARTITIONS": "3",
        **{f"KOMMERCE_{name.upper()}_SERVICE_URL": f"http://127.0.0.1:{port}"
           for name, port in ports.items()},
    }
    own = {
        "payment": {"KOMMERCE_PAYMENT_BACKEND": "stripe",
                    "KOMMERCE_STRIPE_API_KEY": "sk_test_123",
                    "KOMMERCE_STRIPE_API_BASE": stripe_api_base},
        "order": {"KOMMERCE_SAGA_STEP_TIMEOUT_SECONDS": "3",
                  "KOMMERCE_SAGA_TIMER_INTERVAL_SECONDS": "0.2"},
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    services = {}
    for name in SERVICES:
        env = {**common, "KOMMERCE_PORT": str(ports[name]),
               "KOMMERCE_DATABASE_SCHEMA": schemas[name],
               "KOMMERCE_CACHE_PREFIX": f"{name}{run}:",
               **own.get(name, {}), **(extra_env or {}).get(name, {})}
        services[name] = ServiceHandle(name, ports[name], env, log_dir / f"{name}.log")
    platform = CheckoutPlatform(services, database_url, schemas, log_dir)
    try:
        for handle in services.values():
            handle.start()
        for handle in services.values():
            handle.wait_ready()
        yield platform
    finally:
        for handle in services.values():
            handle.stop()


# -- a catalog to sell -----------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    product_id: str
    variant_ids: list[str]


async def stock_catalog(client: httpx.AsyncClient, platform: CheckoutPlatform, *,
                        variants: int, stock: int, price: int = 1250) -> Catalog:
    """A category and one product with ``variants`` variants priced in USD, each with
    ``stock`` units."""
    admin = platform.token("admin-1", "admin")
    product_url = platform["product"].url
    slug = f"checkout-{uuid.uuid4().hex[:6]}"
    created = await client.post(f"{product_url}/categories", headers=admin,
                                json={"slug": slug, "name": "Checkout"})
    assert created.status_code == 201, created.text
    product = await client.post(f"{product_url}/products", headers=admin, json={
        "category": slug, "name": "Checkout widget", "variants": [
            {"sku": f"CO-{uuid.uuid4().hex[:8]}", "stock": stock,
             "price": {"amount": price, "currency": "USD"}} for _ in range(variants)]})
    assert product.status_code == 201, product.text
    return Catalog(product.json()["id"], [v["id"] for v in product.json()["variants"]])


ADDRESS = {"name": "Ann Shopper", "line1": "1 Main St", "city": "Springfield",
           "postal_code": "12345", "country": "US"}


def checkout_body(variant_id: str, quantity: int = 1,
                  method: str = "pm_card_visa") -> dict[str, Any]:
    return {"lines": [{"variant_id": variant_id, "quantity": quantity}], "currency": "usd",
            "payment_method": method, "shipping_address": ADDRESS}
