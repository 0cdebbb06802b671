"""A whole shop started by ``kommerce up --detach``, shared by the tests that act as
shoppers and attackers through the gateway.

One platform per test run (it takes seconds to start); every test registers shoppers of its
own (unique e-mail addresses), so tests do not see each other's carts, orders or payments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kommerce.testbed.ports import free_port, wait_until

#: Backends the caller's shell may point elsewhere; the shop wants the embedded ones.
EXTERNAL_BACKENDS = ("KOMMERCE_DATABASE_URL", "DATABASE_URL", "KOMMERCE_REDIS_URL",
                     "REDIS_URL", "KOMMERCE_JWT_SECRET", "KOMMERCE_EVENT_BUS")

ADMIN_EMAIL = "admin@kommerce.local"
SHIPPING_ADDRESS = {"name": "Ada Lovelace", "line1": "12 St James Square", "city": "London",
                    "postal_code": "SW1Y 4JH", "country": "GB"}


def kommerce(*args: str, data_dir: Path, check: bool = True, timeout: float = 180,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``kommerce <args> --data-dir <data_dir>`` as a user runs it."""
    env = {**{k: v for k, v in os.environ.items() if k not in EXTERNAL_BACKENDS},
           **(env or {})}
    result = subprocess.run([sys.executable, "-m", "kommerce.cli", *args,
                             "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"kommerce {' '.join(args)} exited {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def kommerce_command(*args: str, env: dict[str, str], timeout: float
                     ) -> subprocess.CompletedProcess[str]:
    """A ``kommerce`` subcommand that takes no ``--data-dir``."""
    result = subprocess.run([sys.executable, "-m", "kommerce.cli", *args], capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, **env})
    assert result.returncode == 0, f"kommerce {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


class Kubectl:
    """The test bed's kubectl with the kubeconfig ``kommerce up --cluster`` printed, as the
    README's release manager uses it (its context's namespace is the shop's). ``timeout``
    bounds each call; a rollout on a real node waits for Pods, so it is given longer."""

    def __init__(self, kubeconfig: str, *, timeout: float = 60,
                 rollout_timeout: float = 120) -> None:
        from kommerce.testbed.kube import control_plane_binaries

        self.kubeconfig = kubeconfig
        self.argv = [str(control_plane_binaries()["kubectl"]), f"--kubeconfig={kubeconfig}"]
        self.timeout = timeout
        self.rollout_timeout = rollout_timeout

    def __call__(self, *args: str) -> str:
        return subprocess.run([*self.argv, *args], capture_output=True, text=True,
                              check=True, timeout=self.timeout).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def rollout(self, *args: str) -> str:
        """``kommerce rollout ...`` against the same cluster."""
        return kommerce_command("rollout", *args, env={"KUBECONFIG": self.kubeconfig},
                                timeout=self.rollout_timeout).stdout


@dataclass
class Shopper:
    """A registered, logged-in shopper."""

    email: str
    password: str
    user_id: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class Shop:
    """The running platform: its gateway, its data folder and its processes."""

    data_dir: Path
    port: int
    api: httpx.Client = field(init=False)
    _user_service: httpx.Client | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.api = httpx.Client(base_url=f"{self.url}/api", timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kommerce(self, *args: str, check: bool = True,
                 timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return kommerce(*args, data_dir=self.data_dir, check=check, timeout=timeout)

    def status(self) -> dict[str, Any]:
        return json.loads(self.kommerce("status", "--json", check=False).stdout)  # type: ignore[no-any-return]

    def ports(self) -> dict[str, int]:
        return {p["name"]: p["port"] for p in self.status()["processes"]}

    def service_url(self, name: str) -> str:
        """A service's own address, behind the gateway (for what the gateway must not
        reach, or to check a service refuses a shopper even when called directly)."""
        return f"http://127.0.0.1:{self.ports()[name]}"

    def secret(self, name: str) -> str:
        return (self.data_dir / "secrets" / name).read_text().strip()

    def register(self, password: str = "correct-horse-battery-staple", *,
                 via_gateway: bool = False) -> Shopper:
        """A new shopper with a unique address, registered and logged in.

        Set-up goes to the user service itself by default: the gateway's per-address limit
        on ``/api/auth`` (meant for one client) would otherwise count every test's shoppers
        as one client. A test about the auth routes themselves passes ``via_gateway``."""
        email = f"shopper-{uuid.uuid4().hex[:12]}@example.com"
        client, prefix = self._auth_client(via_gateway)
        registered = client.post(f"{prefix}/auth/register", json={
            "email": email, "password": password, "full_name": "Test Shopper"})
        assert registered.status_code == 201, registered.text
        return self.login(email, password, via_gateway=via_gateway)

    def _auth_client(self, via_gateway: bool) -> tuple[httpx.Client, str]:
        if via_gateway:
            return self.api, ""
        if self._user_service is None:
            self._user_service = httpx.Client(base_url=self.service_url("user"), timeout=30)
        return self._user_service, ""

    def login(self, email: str, password: str, *, via_gateway: bool = False) -> Shopper:
        client, prefix = self._auth_client(via_gateway)
        response = client.post(f"{prefix}/auth/login",
                               json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        body = response.json()
        me = client.get(f"{prefix}/users/me",
                        headers={"Authorization": f"Bearer {body['access_token']}"})
        assert me.status_code == 200, me.text
        return Shopper(email=email, password=password, user_id=str(me.json()["id"]),
                       access_token=body["access_token"],
                       refresh_token=body.get("refresh_token", ""))

    def admin(self) -> Shopper:
        return self.login(ADMIN_EMAIL, self.secret("admin-password"))

    def in_stock_variant(self, query: str = "headphones") -> dict[str, Any]:
        """A variant of the seeded catalog with stock available."""
        listed = self.api.get("/products", params={"q": query, "in_stock": "true",
                                                   "limit": 20})
        assert listed.status_code == 200, listed.text
        for product in listed.json()["items"]:
            for variant in product["variants"]:
                if variant["stock"]["available"] > 0:
                    return {**variant, "product_id": product["id"]}
        raise AssertionError(f"no {query} in stock")

    def variant(self, product_id: str, variant_id: str) -> dict[str, Any]:
        product = self.api.get(f"/products/{product_id}")
        assert product.status_code == 200, product.text
        return next(v for v in product.json()["variants"] if v["id"] == variant_id)

    def place_order(self, shopper: Shopper, variant_id: str, *, quantity: int = 1,
                    payment_method: str = "pm_card_visa") -> dict[str, Any]:
        """Cart, then checkout; the order as the checkout answered it (PENDING)."""
        cart = self.api.post("/cart/items", headers=shopper.auth,
                             json={"variant_id": variant_id, "quantity": quantity,
                                   "currency": "eur"})
        assert cart.status_code == 200, cart.text
        placed = self.api.post("/cart/checkout",
                               headers={**shopper.auth, "Idempotency-Key": uuid.uuid4().hex},
                               json={"payment_method": payment_method,
                                     "shipping_address": SHIPPING_ADDRESS})
        assert placed.status_code == 202, placed.text
        return placed.json()  # type: ignore[no-any-return]

    def order(self, shopper: Shopper, order_id: str) -> dict[str, Any]:
        response = self.api.get(f"/orders/{order_id}", headers=shopper.auth)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def wait_for_order(self, shopper: Shopper, order_id: str, statuses: tuple[str, ...],
                       timeout: float = 30) -> dict[str, Any]:
        # Polled gently: the gateway lets one shopper read orders 50 times a minute.
        wait_until(lambda: self.order(shopper, order_id)["status"] in statuses,
                   timeout=timeout, what=f"order {order_id} to reach {statuses}",
                   interval=1.5)
        return self.order(shopper, order_id)


@contextmanager
def running_shop(data_dir: Path) -> Iterator[Shop]:
    """``kommerce up --detach`` in ``data_dir`` until the block ends, then ``down``."""
    port = free_port()
    try:
        kommerce("up", "--detach", "--port", str(port), data_dir=data_dir, timeout=300)
        shop = Shop(data_dir=data_dir, port=port)
        yield shop
        shop.api.close()
        if shop._user_service is not None:
            shop._user_service.close()
    finally:
        kommerce("down", data_dir=data_dir, check=False)


def token_service(shop: Shop, service: str) -> Any:
    """The token service of ``service`` in this shop, holding its private key from the data
    folder: the user service's mints user tokens, any other's only its own identity."""
    from services.core.auth import TokenService
    from services.core.settings import ServiceSettings

    secrets = shop.data_dir / "secrets"
    settings = ServiceSettings(service_name=service,
                               jwt_private_key=(secrets / f"jwt-{service}.pem").read_text(),
                               jwt_jwks=str(secrets / "jwks.json"))  # type: ignore[arg-type]
    return TokenService(settings)


def service_headers(shop: Shop, service: str, audience: str) -> dict[str, str]:
    """What ``service`` sends ``audience``: its identity token, signed with its own key."""
    token = token_service(shop, service).issue_service(audience).token
    return {"Authorization": f"Bearer {token}"}
