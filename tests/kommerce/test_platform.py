"""The pure parts of ``kommerce up``: the demo catalog, the service table, the state file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from kommerce.platform.seed import CATEGORIES, PRODUCTS_PER_CATEGORY, demo_products
from kommerce.platform.services import SERVICES, ServiceSpec, installed_services
from kommerce.platform.state import PlatformState, ProcessRecord, process_start_time
from kommerce.testbed.cache import REPO_ROOT
from services.product.schemas import ProductIn


def test_demo_catalog_is_accepted_by_the_product_api_and_the_same_every_time() -> None:
    products = demo_products()
    assert len(products) == PRODUCTS_PER_CATEGORY * len(CATEGORIES)
    for product in products:
        ProductIn.model_validate(product)
    skus = [v["sku"] for p in products for v in p["variants"]]
    assert len(skus) == len(set(skus)), "a repeated SKU would be skipped as 'already there'"
    assert products == demo_products()


def test_demo_categories_are_the_shard_layouts() -> None:
    layout = yaml.safe_load((REPO_ROOT / "manifests/samples/shard-layout.yaml").read_text())
    sharded = {c for shard in layout["spec"]["shards"] for c in shard["categories"]}
    assert set(CATEGORIES) == sharded


def test_only_packages_with_main_and_app_modules_count_as_installed() -> None:
    assert ServiceSpec("user").installed()
    assert ServiceSpec("core").missing() == "no module services.core.__main__ yet"
    assert not ServiceSpec("no-such-service").installed()
    assert [spec.name for spec in installed_services()] == [
        spec.name for spec in SERVICES if spec.installed()]


def test_skipping_an_unknown_service_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"no such service: usr.*user, product"):
        installed_services(skip=["usr"])
    assert "user" not in {spec.name for spec in installed_services(skip=["user"])}


def test_state_file_round_trips(tmp_path: Path) -> None:
    state = PlatformState(data_dir=str(tmp_path), gateway_url="http://127.0.0.1:8080",
                          processes=[ProcessRecord.of("me", os.getpid(), 0, tmp_path / "l")])
    state.save()
    assert PlatformState.load(tmp_path) == state
    state.remove()
    assert PlatformState.load(tmp_path) is None


def test_a_pid_reused_by_another_process_is_not_taken_for_ours() -> None:
    started = process_start_time(os.getpid())
    assert started is not None
    ours = ProcessRecord("me", os.getpid(), 0, "log", started=started)
    reused = ProcessRecord("me", os.getpid(), 0, "log", started=started + 1)
    assert ours.running() and ours.ready()  # no port: running is ready
    assert not reused.running()
    assert reused.stop()  # nothing to stop, and nothing signalled
