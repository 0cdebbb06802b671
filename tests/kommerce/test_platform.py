"""The pure parts of ``kommerce up``: the demo catalog and its reviews, the service table,
the state file, and how the sample shop is adapted to the local cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from kommerce.platform.cluster import checks_on_local_services
from kommerce.platform.seed import (
    CATEGORIES,
    PRODUCTS_PER_CATEGORY,
    REVIEWERS,
    demo_products,
    demo_reviews,
    reviewer_email,
)
from kommerce.platform.services import SERVICES, ServiceSpec, installed_services
from kommerce.platform.state import (
    PlatformState,
    ProcessRecord,
    data_dir_of_kubeconfig,
    process_start_time,
    register_by_hand,
    started_by_hand,
)
from kommerce.testbed.cache import REPO_ROOT
from services.product.schemas import ProductIn
from services.review.schemas import ReviewIn
from services.user.schemas import RegisterRequest


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


def test_demo_reviews_are_accepted_by_the_review_api_one_per_shopper_and_product() -> None:
    reviews = [demo_reviews(product) for product in demo_products()]
    assert reviews == [demo_reviews(product) for product in demo_products()]
    for product, per_product in zip(demo_products(), reviews, strict=True):
        reviewers = [reviewer for reviewer, _ in per_product]
        assert len(reviewers) == len(set(reviewers)), "a second review would be refused"
        item = product["name"].removeprefix(product["attributes"]["brand"] + " ").lower()
        for _, body in per_product:
            ReviewIn.model_validate(body)
            assert item in body["body"], (product["name"], body)  # "Urban Thread Hoodie"
    written = sum(map(len, reviews))
    # Most products have some reviews, a few have none: both show up in the shop.
    assert sum(1 for r in reviews if not r) < len(reviews) // 4 < written
    assert {body["rating"] for r in reviews for _, body in r} == {1, 2, 3, 4, 5}


def test_demo_reviewers_can_register() -> None:
    for full_name, handle in REVIEWERS:
        RegisterRequest.model_validate({"email": reviewer_email(handle),
                                        "password": "a-long-demo-password-42",
                                        "full_name": full_name})


def test_on_the_local_cluster_rollout_checks_ask_the_locally_running_service() -> None:
    shop = [
        {"kind": "CommerceService", "metadata": {"name": "product-service"},
         "spec": {"component": "product"}},
        {"kind": "BlueGreenRollout", "metadata": {"name": "product-service"},
         "spec": {"serviceRef": {"name": "product-service"}, "prePromotionChecks": {
             "http": [{"path": "/ready"}, {"url": "http://smoke.example/ok"}, {}],
             "errorRate": {"metric": "http_requests_total"}}}},
        {"kind": "BlueGreenRollout", "metadata": {"name": "not-local"},
         "spec": {"serviceRef": {"name": "search-service"},
                  "prePromotionChecks": {"http": [{"path": "/ready"}]}}},
    ]
    local = {"product": "http://127.0.0.1:4242", "search": "http://127.0.0.1:4343"}
    adapted = checks_on_local_services(shop, local)
    checks = adapted[1]["spec"]["prePromotionChecks"]
    assert [check["url"] for check in checks["http"]] == [
        "http://127.0.0.1:4242/ready", "http://smoke.example/ok", "http://127.0.0.1:4242/ready"]
    assert checks["errorRate"]["url"] == "http://127.0.0.1:4242/metrics"
    # No CommerceService names search-service's component: its rollout is left alone.
    assert adapted[2] == shop[2] and adapted[0] == shop[0]
    assert "url" not in shop[1]["spec"]["prePromotionChecks"]["http"][0], "input untouched"


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


def test_an_operator_run_by_hand_registers_only_against_the_platforms_cluster(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "kommerce"
    (data_dir / "cluster").mkdir(parents=True)
    kubeconfig = data_dir / "cluster" / "kubeconfig"
    assert data_dir_of_kubeconfig(str(kubeconfig)) is None  # no platform runs there
    PlatformState(data_dir=str(data_dir), gateway_url="http://127.0.0.1:1").save()
    elsewhere = tmp_path / "home" / ".kube" / "config"
    assert data_dir_of_kubeconfig(f"{elsewhere}{os.pathsep}{kubeconfig}") == data_dir
    assert data_dir_of_kubeconfig(str(elsewhere)) is None
    assert data_dir_of_kubeconfig(None) is None

    path = register_by_hand(data_dir, "kommerce-operator (by hand)", 8080)
    (found_path, record), = started_by_hand(data_dir)
    assert found_path == path and record.pid == os.getpid() and record.running()
    assert record.own_group == (os.getpgid(0) == os.getpid())
