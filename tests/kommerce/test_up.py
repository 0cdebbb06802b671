"""``kommerce up`` as a newcomer runs it: the platform starts, serves the README's shopper
session through the gateway, reports itself, stops cleanly and starts warm without seeding
again.

One test on purpose: the platform takes seconds to start, and the second start is the point
of the warm-start and no-reseed checks.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kommerce.platform.seed import CATEGORIES, PRODUCTS_PER_CATEGORY
from kommerce.platform.state import ProcessRecord
from kommerce.testbed.ports import free_port, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: The README's shopper (section "Run it"); the requests below are the README's curl lines.
SHOPPER = {"email": "ada@example.com", "password": "correct-horse-battery",
           "full_name": "Ada Lovelace"}

#: Backends the caller's shell may point elsewhere; the test wants the embedded ones.
EXTERNAL_BACKENDS = ("KOMMERCE_DATABASE_URL", "DATABASE_URL", "KOMMERCE_REDIS_URL",
                     "REDIS_URL", "KOMMERCE_JWT_SECRET", "KOMMERCE_EVENT_BUS")


def kommerce(*args: str, data_dir: Path, check: bool = True, timeout: float = 120,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if k not in EXTERNAL_BACKENDS},
           **(env or {})}
    result = subprocess.run([sys.executable, "-m", "kommerce.cli", *args,
                             "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"kommerce {' '.join(args)} exited {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def up(data_dir: Path, port: int) -> tuple[float, str]:
    """Start detached; the start time the command printed, and its output."""
    out = kommerce("up", "--detach", "--port", str(port), data_dir=data_dir).stdout
    match = re.search(r"ready in ([0-9.]+) s \((cold|warm) start", out)
    assert match, out
    return float(match.group(1)), out


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "kommerce"
    # Whatever happened, leave nothing running.
    kommerce("down", data_dir=tmp_path / "kommerce", check=False)


def status(data_dir: Path) -> dict[str, Any]:
    result = kommerce("status", "--json", data_dir=data_dir, check=False)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def still_running(report: dict[str, Any]) -> list[str]:
    """Which of the processes ``status --json`` listed still run (checked by pid and start
    time, not by asking the state file, which ``down`` removes)."""
    fields = ProcessRecord.__dataclass_fields__
    records = [ProcessRecord(**{k: v for k, v in process.items() if k in fields})
               for process in report["processes"]]
    return [record.name for record in records if record.running()]


def count_in_category(api: httpx.Client, category: str) -> int:
    response = api.get("/products", params={"category": category, "limit": 100})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    return len(page["items"])


def shopper_session(api: httpx.Client) -> None:
    """register → log in → browse and search the catalog → open a product, as in the
    README."""
    registered = api.post("/auth/register", json=SHOPPER)
    assert registered.status_code == 201, registered.text
    login = api.post("/auth/login", json={"email": SHOPPER["email"],
                                         "password": SHOPPER["password"]})
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    me = api.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["email"] == SHOPPER["email"], me.text

    found = api.get("/products", params={"q": "headphones", "limit": 5})
    assert found.status_code == 200, found.text
    items = found.json()["items"]
    assert items and all("Headphones" in item["name"] for item in items)

    shoes = api.get("/products", params={"category": "shoes", "in_stock": "true",
                                         "sort": "price_asc", "limit": 10})
    assert shoes.status_code == 200, shoes.text
    cheapest = shoes.json()["items"]
    assert cheapest and {item["category"] for item in cheapest} == {"shoes"}

    product = api.get(f"/products/{items[0]['id']}")
    assert product.status_code == 200, product.text
    assert product.json()["variants"][0]["sku"].startswith("DEMO-")


def search_finds_the_seeded_catalog(api: httpx.Client) -> None:
    """The search service indexes the catalog from the product service's events, so it
    catches up a moment after seeding."""
    def indexed() -> bool:
        response = api.get("/search", params={"q": "headphones"})
        return response.status_code == 200 and response.json()["total"] >= 5

    wait_until(indexed, timeout=30, what="search index of the demo catalog", interval=0.5)


def test_up_serves_the_seeded_shop_through_the_gateway_and_restarts_warm(
        data_dir: Path) -> None:
    port = free_port()
    cold_seconds, out = up(data_dir, port)
    assert "cold start" in out and "catalog seeded: 300 products created" in out, out
    assert f"http://127.0.0.1:{port}/api" in out

    report = status(data_dir)
    assert report["ready"] is True, report
    names = {process["name"] for process in report["processes"]}
    assert {"postgres", "redis", "user", "product", "gateway"} <= names

    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=10) as api:
        shopper_session(api)
        if "search" in names:
            search_finds_the_seeded_catalog(api)
        assert count_in_category(api, "garden") == PRODUCTS_PER_CATEGORY
        assert {c["slug"] for c in api.get("/categories").json()} == set(CATEGORIES)

    stopped = kommerce("down", data_dir=data_dir).stdout
    assert "gateway stopped" in stopped and "postgres stopped" in stopped
    assert still_running(report) == []
    assert status(data_dir)["processes"] == []

    warm_seconds, out = up(data_dir, port)
    assert "warm start" in out and "catalog already seeded" in out, out
    assert warm_seconds < cold_seconds, (warm_seconds, cold_seconds)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=10) as api:
        # Seeded once: the second start added nothing; the shopper from before still logs in.
        assert count_in_category(api, "garden") == PRODUCTS_PER_CATEGORY
        login = api.post("/auth/login", json={"email": SHOPPER["email"],
                                             "password": SHOPPER["password"]})
        assert login.status_code == 200, login.text
    assert status(data_dir)["ready"] is True


@pytest.mark.kube
def test_up_with_the_cluster_shows_the_sample_shop_and_down_stops_the_cluster_too(
        data_dir: Path) -> None:
    from kommerce.testbed.kube import control_plane_binaries

    port = free_port()
    out = kommerce("up", "--detach", "--cluster", "--no-seed", "--port", str(port),
                   data_dir=data_dir, timeout=240).stdout
    report = status(data_dir)
    assert report["ready"] is True, report
    kubeconfig = report["kubeconfig"]
    assert kubeconfig and f"KUBECONFIG={kubeconfig}" in out, out
    assert {"kube-apiserver", "kommerce-operator"} <= {p["name"] for p in report["processes"]}

    kubectl = [str(control_plane_binaries()["kubectl"]), f"--kubeconfig={kubeconfig}"]
    listed = subprocess.run([*kubectl, "get", "commerceservices", "-A", "-o", "name"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert "commerceservice.kommerce.io/product-service" in listed, listed

    kommerce("down", data_dir=data_dir)
    assert still_running(report) == []


def test_a_taken_gateway_port_is_refused_before_anything_starts(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = kommerce("up", "--detach", "--port", str(port), data_dir=data_dir,
                          check=False)
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stdout, result.stdout
    assert not (data_dir / "postgres").exists()


def test_a_service_that_cannot_start_fails_the_command_with_its_log_and_stops_the_rest(
        data_dir: Path) -> None:
    # Every service refuses a JWT key shorter than 32 characters at start-up.
    result = kommerce("up", "--detach", "--port", str(free_port()), data_dir=data_dir,
                      check=False, env={"KOMMERCE_JWT_SECRET": "too-short"})
    assert result.returncode == 1, result.stdout
    # Which service the command names depends on which dies first; each one's log says why.
    assert "stopped while starting" in result.stdout and "log tail" in result.stdout, \
        result.stdout
    assert status(data_dir)["processes"] == []  # nothing left running, no state file
