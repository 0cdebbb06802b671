"""ShardLayout on the real control plane: bad layouts refused by the apiserver or reported
with a condition (the map in force stays), good ones published as the versioned shard map
the product service's loader takes and hot-reloads."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.operator import OperatorProcess
from kommerce.testbed.ports import wait_until
from services.core.shardmap import ShardMapWatcher, parse_shard_map

pytestmark = pytest.mark.kube


@pytest.fixture
def namespace(control_plane: ControlPlane, kommerce_operator: OperatorProcess) -> str:
    return control_plane.create_namespace(f"shl-{uuid.uuid4().hex[:8]}")


def _layout(shards: list[dict[str, Any]], default: str = "shard-1",
            **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kommerce.io/v1alpha1", "kind": "ShardLayout",
            "metadata": {"name": "catalog"},
            "spec": {"defaultShard": default, "shards": shards, **spec}}


def _shard(name: str, *categories: str) -> dict[str, Any]:
    return {"name": name, "database": {"name": f"catalog-{name}", "key": "url"},
            "categories": list(categories)}


TWO_SHARDS = [_shard("shard-1", "electronics", "computers"), _shard("shard-2", "shoes")]


def _apply(plane: ControlPlane, manifest: dict[str, Any], namespace: str,
           check: bool = True) -> Any:
    return plane.kubectl("apply", "-n", namespace, "-f", "-",
                         input_text=yaml.safe_dump(manifest), check=check)


def _secret(plane: ControlPlane, namespace: str, shard: str) -> None:
    plane.kubectl("create", "secret", "generic", f"catalog-{shard}", "-n", namespace,
                  f"--from-literal=url=postgresql://db/{shard}")


def _get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _status(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    return (_get(plane, "shardlayout", "catalog", namespace) or {}).get("status") or {}


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def _published(plane: ControlPlane, namespace: str) -> str:
    return (_get(plane, "configmap", "catalog-shard-map", namespace) or {}).get(
        "data", {}).get("shard-map.json", "")


@pytest.mark.parametrize(("shards", "default", "message"), [
    ([_shard("shard-1", "shoes"), _shard("shard-2", "shoes")], "shard-1",
     "a category may belong to only one shard"),
    (TWO_SHARDS, "shard-9", "defaultShard must name one of spec.shards"),
], ids=["category-in-two-shards", "missing-default"])
def test_the_apiserver_refuses_an_invalid_layout_with_a_clear_message(
        control_plane: ControlPlane, namespace: str, shards: list[dict[str, Any]],
        default: str, message: str) -> None:
    result = _apply(control_plane, _layout(shards, default), namespace, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert _get(control_plane, "shardlayout", "catalog", namespace) is None


def test_a_layout_is_published_as_the_versioned_map_the_product_service_loads(
        control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    for shard in ("shard-1", "shard-2"):
        _secret(control_plane, namespace, shard)
    _apply(control_plane, _layout(TWO_SHARDS, unlistedCategories="Hash"), namespace)
    wait_until(lambda: _condition(_status(control_plane, namespace), "Ready").get("status")
               == "True", timeout=30, what="layout published", interval=0.2)
    status = _status(control_plane, namespace)
    loaded = parse_shard_map(_published(control_plane, namespace))
    assert loaded.version == status["mapVersion"]
    assert status["configMap"] == "catalog-shard-map" and status["phase"] == "Stable"
    assert loaded.shard_for("computers") == "shard-1" and loaded.shard_for("shoes") == "shard-2"
    assert loaded.shard_for("garden") in {"shard-1", "shard-2"}
    config_map = _get(control_plane, "configmap", "catalog-shard-map", namespace) or {}
    assert config_map["metadata"]["annotations"]["kommerce.io/shard-map-version"] == \
        loaded.version
    assert config_map["metadata"]["ownerReferences"][0]["kind"] == "ShardLayout"


def test_an_unknown_secret_is_reported_and_the_map_in_force_stays_until_it_exists(
        control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    for shard in ("shard-1", "shard-2"):
        _secret(control_plane, namespace, shard)
    _apply(control_plane, _layout(TWO_SHARDS), namespace)
    wait_until(lambda: _condition(_status(control_plane, namespace), "Ready").get("status")
               == "True", timeout=30, what="first layout published", interval=0.2)
    first = _status(control_plane, namespace)["mapVersion"]
    mounted = tmp_path / "shard-map.json"  # what the kubelet mounts into the product Pods
    mounted.write_text(_published(control_plane, namespace))
    watcher = ShardMapWatcher(tmp_path)
    assert watcher.value.version == first

    moved = [_shard("shard-1", "electronics"), _shard("shard-2", "shoes"),
             _shard("shard-3", "computers")]
    _apply(control_plane, _layout(moved), namespace)
    wait_until(lambda: _condition(_status(control_plane, namespace), "Degraded").get("reason")
               == "SecretNotFound", timeout=30, what="missing Secret reported", interval=0.2)
    degraded = _condition(_status(control_plane, namespace), "Degraded")
    assert "Secret catalog-shard-3 (shard shard-3) not found" in degraded["message"]
    assert f"shard map {first} stays in force" in degraded["message"]
    assert _status(control_plane, namespace)["mapVersion"] == first
    assert parse_shard_map(_published(control_plane, namespace)).version == first
    events = control_plane.kubectl("get", "events", "-n", namespace, "--field-selector",
                                   "involvedObject.name=catalog,reason=SecretNotFound",
                                   "-o", "name").stdout
    assert events.strip()

    _secret(control_plane, namespace, "shard-3")
    wait_until(lambda: _status(control_plane, namespace).get("mapVersion") not in (None, first),
               timeout=30, what="new map published once the Secret exists", interval=0.3)
    assert _condition(_status(control_plane, namespace), "Ready")["status"] == "True"
    mounted.write_text(_published(control_plane, namespace))
    assert watcher.check()  # hot reload: the new version takes over
    assert watcher.shard_for("computers") == "shard-3"
    assert watcher.value.version == _status(control_plane, namespace)["mapVersion"]


def _mounted_shard_secrets(plane: ControlPlane, namespace: str) -> set[str]:
    deployment = _get(plane, "deployment", "product-service", namespace) or {}
    volumes = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", [])
    return {source["secret"]["name"] for volume in volumes if volume["name"] == "shard-databases"
            for source in volume["projected"]["sources"]}


def test_a_product_service_mounts_its_layouts_map_and_a_new_shards_secret_when_it_is_added(
        control_plane: ControlPlane, namespace: str) -> None:
    for shard in ("shard-1", "shard-2", "shard-3"):
        _secret(control_plane, namespace, shard)
    _apply(control_plane, {"apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
                           "metadata": {"name": "product-service"},
                           "spec": {"component": "product", "image": "kommerce:1",
                                    "shardLayout": "catalog"}}, namespace)
    _apply(control_plane, _layout(TWO_SHARDS), namespace)
    wait_until(lambda: _mounted_shard_secrets(control_plane, namespace)
               == {"catalog-shard-1", "catalog-shard-2"}, timeout=30,
               what="the two shards' Secrets mounted", interval=0.2)
    pod = (_get(control_plane, "deployment", "product-service", namespace) or {})["spec"][
        "template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["shard-map"]["configMap"]["name"] == "catalog-shard-map"

    _apply(control_plane, _layout([*TWO_SHARDS, _shard("shard-3", "garden")]), namespace)
    wait_until(lambda: _mounted_shard_secrets(control_plane, namespace)
               == {"catalog-shard-1", "catalog-shard-2", "catalog-shard-3"}, timeout=30,
               what="the new shard's Secret mounted", interval=0.2)
