"""The checkout platform as separate processes: product, payment (Stripe backend), shipping
and order, each ``python -m services.<name>`` on a loopback port, as ``kommerce up`` and a
cluster run them — so the order service can be killed and restarted like a crashed pod.

Used by the order service's fault and card-number tests (``tests/services/order``) and by
``bench/checkout.py``, which is why it lives in the test bed and not among the tests. Every process
shares one PostgreSQL (a schema each), Redis, the event bus (Kafka, under a topic prefix of
this run's own) and the trusted token keys (a JWKS of this run's own): each service signs
with a service key of its own, so the order service's service token is accepted by the
others, and the test holds the user-token key the user service would, so it can mint
tokens for shoppers and the catalog's admin.

:class:`StripeRecorder` is a loopback proxy in front of stripe-mock that notes each request's
method, path, ``Idempotency-Key`` and body, and the answer, before passing it on: stripe-mock
keeps no state, so this is how a test counts the charges and refunds the platform actually
asked Stripe for. stripe-mock checks every request against Stripe's API spec but answers
from fixtures, and its PaymentIntent fixture is always ``requires_payment_method`` (which the
payment service rightly reads as a decline). Stripe in test mode decides by the test card,
so for the cards whose documented outcome is not a decline the proxy sets what Stripe
answers on a confirmed intent: ``succeeded`` for the always-succeed cards
(:data:`SUCCEEDING_CARDS`), ``requires_action`` with a ``next_action`` for the 3-D Secure
cards (:data:`AUTHENTICATING_CARDS`). Every other card, and every other request (refunds,
cancels), gets stripe-mock's own answer unchanged: a declined card takes its real path.

:func:`signed_webhook` signs an event with the payment service's webhook secret, as Stripe
signs what it sends, so a test can tell the platform that a shopper finished 3-D Secure.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from kommerce.platform import keys
from kommerce.testbed.cache import REPO_ROOT
from kommerce.testbed.ports import free_port, wait_until
from kommerce.testbed.process import ServerProcess

SERVICES = ("product", "payment", "shipping", "order")


# -- Stripe, recorded ------------------------------------------------------------------------


#: Stripe's documented test payment methods that always succeed, as the shop's tests use them.
SUCCEEDING_CARDS = frozenset({"pm_card_visa", "pm_card_visa_debit", "pm_card_mastercard",
                              "pm_card_amex", "pm_card_riskLevelElevated"})
#: Test payment methods for which Stripe asks the shopper to authenticate (3-D Secure).
AUTHENTICATING_CARDS = frozenset({"pm_card_threeDSecure2Required",
                                  "pm_card_authenticationRequired"})
#: What Stripe's test mode puts in ``next_action`` for a 3-D Secure 2 card: Stripe.js takes
#: it from there in the shopper's browser.
THREE_D_SECURE_ACTION = {"type": "use_stripe_sdk",
                         "use_stripe_sdk": {"type": "stripe_3ds2_fingerprint"}}
WEBHOOK_SECRET = "whsec_checkout_platform_test_secret"


@dataclass
class StripeCall:
    method: str
    path: str
    idempotency_key: str | None
    body: bytes
    status: int = 0
    answer: bytes = b""

    @property
    def params(self) -> dict[str, str]:
        """The form-encoded body, one value a field (``metadata[order_id]`` as is)."""
        return dict(urllib.parse.parse_qsl(self.body.decode(errors="replace")))

    @property
    def answered(self) -> dict[str, Any]:
        return json.loads(self.answer) if self.answer else {}

    @property
    def metadata(self) -> dict[str, str]:
        """The metadata sent (stripe-mock does not echo it; Stripe keeps it on the object
        and sends it with every event about it)."""
        return {k[len("metadata["):-1]: v for k, v in self.params.items()
                if k.startswith("metadata[") and k.endswith("]")}


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

    def intents_for(self, order_id: str) -> list[StripeCall]:
        """The PaymentIntents created for an order (the payment service puts the order id in
        the intent's metadata), with the answers the platform got."""
        return [c for c in self.calls if c.method == "POST"
                and c.path.split("?")[0] == "/v1/payment_intents"
                and c.params.get("metadata[order_id]") == order_id]

    def refunds_of(self, intent_id: str) -> list[StripeCall]:
        """The refunds asked of Stripe for a PaymentIntent, with stripe-mock's answers."""
        return [c for c in self.calls if c.method == "POST"
                and c.path.split("?")[0] == "/v1/refunds"
                and c.params.get("payment_intent") == intent_id]

    @contextmanager
    def serving(self) -> Iterator[StripeRecorder]:
        recorder = self
        lock = threading.Lock()
        parsed = urllib.parse.urlsplit(self.upstream)
        recorder_host, recorder_port = parsed.hostname or "127.0.0.1", parsed.port or 80

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Stripe's API is
            upstream: http.client.HTTPConnection | None = None

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                call = StripeCall(self.command, self.path, self.headers.get("Idempotency-Key"),
                                  body or b"")
                with lock:
                    recorder.calls.append(call)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                status, data, kind = self._upstream_answer(body, headers)
                if status == 200 and _confirms_intent(self.command, self.path, body):
                    data = _as_test_mode(data, call.params.get("payment_method"))
                call.status, call.answer = status, data
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
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection(recorder_host, recorder_port,
                                                               timeout=30)
                self.upstream.request(self.command, self.path, body=body, headers=headers)
                answer = self.upstream.getresponse()
                return answer.status, answer.read(), answer.getheader("Content-Type")

            def _close_upstream(self) -> None:
                if self.upstream is not None:
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


def _as_test_mode(data: bytes, payment_method: str | None) -> bytes:
    """A confirmed intent as Stripe's test mode answers for ``payment_method``; a card with
    no outcome of its own here keeps stripe-mock's answer (a decline)."""
    if payment_method in SUCCEEDING_CARDS:
        changes: dict[str, Any] = {"status": "succeeded", "next_action": None}
    elif payment_method in AUTHENTICATING_CARDS:
        changes = {"status": "requires_action", "next_action": THREE_D_SECURE_ACTION}
    else:
        return data
    intent = json.loads(data)
    intent.update(changes, last_payment_error=None)
    return json.dumps(intent).encode()


def signed_webhook(event_type: str, obj: dict[str, Any],
                   secret: str = WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    """A Stripe event about ``obj`` and the headers Stripe sends it with: the body and a
    ``Stripe-Signature`` (HMAC-SHA256 of ``<timestamp>.<body>`` with the endpoint secret)."""
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event",
                       "type": event_type, "created": int(time.time()),
                       "data": {"object": obj}}).encode()
    at = int(time.time())
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={at},v1={digest}",
                  "Content-Type": "application/json"}


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
            log_path=self.log_path, env=self.env, cwd=REPO_ROOT).start()

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
    key_dir: Path

    def __getitem__(self, name: str) -> ServiceHandle:
        return self.services[name]

    def token(self, subject: str, *roles: str) -> dict[str, str]:
        from pydantic import SecretStr

        from services.core.auth import TokenService
        from services.core.settings import ServiceSettings

        settings = ServiceSettings(
            service_name="user",
            jwt_private_key=SecretStr(keys.private_key(self.key_dir, "user")),
            jwt_jwks=str(self.key_dir / "secrets" / "jwks.json"))
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
    key_dir = log_dir / "keys"
    ports = {name: free_port() for name in SERVICES}
    schemas = {name: f"{name}_{run}" for name in SERVICES}
    common = {
        "KOMMERCE_ENVIRONMENT": "test", "KOMMERCE_HOST": "127.0.0.1",
        "KOMMERCE_DATABASE_URL": database_url, "KOMMERCE_REDIS_URL": redis_url,
        "KOMMERCE_EVENT_BUS": "kafka", "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KOMMERCE_EVENT_TOPIC_PREFIX": f"co{run}.",
        **keys.shared_env(key_dir, ["user", *SERVICES]),
        "KOMMERCE_OUTBOX_POLL_INTERVAL_SECONDS": "0.05", "KOMMERCE_LOG_LEVEL": "INFO",
        "KOMMERCE_KAFKA_TOPIC_PARTITIONS": "3",
        **{f"KOMMERCE_{name.upper()}_SERVICE_URL": f"http://127.0.0.1:{port}"
           for name, port in ports.items()},
    }
    own = {
        "payment": {"KOMMERCE_PAYMENT_BACKEND": "stripe",
                    "KOMMERCE_STRIPE_API_KEY": "sk_test_123",
                    "KOMMERCE_STRIPE_API_BASE": stripe_api_base,
                    "KOMMERCE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET},
        "order": {"KOMMERCE_SAGA_STEP_TIMEOUT_SECONDS": "3",
                  "KOMMERCE_SAGA_TIMER_INTERVAL_SECONDS": "0.2"},
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    services = {}
    for name in SERVICES:
        env = {**common, "KOMMERCE_PORT": str(ports[name]),
               "KOMMERCE_DATABASE_SCHEMA": schemas[name],
               "KOMMERCE_CACHE_PREFIX": f"{name}{run}:",
               **keys.service_env(key_dir, name),
               **own.get(name, {}), **(extra_env or {}).get(name, {})}
        services[name] = ServiceHandle(name, ports[name], env, log_dir / f"{name}.log")
    platform = CheckoutPlatform(services, database_url, schemas, log_dir, key_dir)
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
