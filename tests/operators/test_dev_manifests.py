"""manifests/dev/: the backing servers the sample shop's connection settings name exist under
those names and ports, and the real apiserver accepts every object kustomize renders."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from .conftest import ROOT, SAMPLES_DIR, load_yaml_documents

DEV_DIR = ROOT / "manifests" / "dev"

#: Settings in backing-services.yaml that are not addresses of a server in the cluster.
_NOT_ADDRESSES = {"kommerce-jwt", "user-signing-key", "order-signing-key", "stripe-credentials"}


def _sample_addresses() -> dict[str, tuple[str, int]]:
    """Each connection setting of backing-services.yaml (by its object's name) and the
    host and port it points at."""
    addresses: dict[str, tuple[str, int]] = {}
    for document in load_yaml_documents(SAMPLES_DIR / "backing-services.yaml"):
        name = document["metadata"]["name"]
        if name in _NOT_ADDRESSES:
            continue
        (value,) = (document.get("data") or document.get("stringData")).values()
        parts = urlsplit(value if "://" in value else f"kafka://{value}")
        assert parts.hostname and parts.port, f"{name}: no host and port in {value!r}"
        addresses[name] = (parts.hostname, parts.port)
    return addresses


def _postgres_databases(documents: list[dict[str, Any]]) -> set[str]:
    """The databases the dev PostgreSQL has after its first start: POSTGRES_DB and those the
    init scripts create."""
    (credentials,) = [d for d in documents if d["kind"] == "Secret"
                      and d["metadata"]["name"] == "postgres-credentials"]
    databases = {credentials["stringData"]["POSTGRES_DB"]}
    (init,) = [d for d in documents if d["kind"] == "ConfigMap"
               and d["metadata"]["name"] == "postgres-init"]
    for script in init["data"].values():
        databases |= {line.split()[2].rstrip(";") for line in script.splitlines()
                      if line.upper().startswith("CREATE DATABASE")}
    return databases


def test_kustomization_lists_every_manifest_in_the_folder() -> None:
    (kustomization,) = load_yaml_documents(DEV_DIR / "kustomization.yaml")
    files = {path.name for path in DEV_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    (samples,) = load_yaml_documents(SAMPLES_DIR / "kustomization.yaml")
    assert kustomization["namespace"] == samples["namespace"], "short host names need one namespace"


def test_every_image_is_named_with_a_pinned_tag() -> None:
    for path in sorted(DEV_DIR.glob("*.yaml")):
        for document in load_yaml_documents(path):
            if document["kind"] not in ("Deployment", "StatefulSet"):
                continue
            for container in document["spec"]["template"]["spec"]["containers"]:
                name, _, tag = container["image"].rpartition(":")
                assert name and tag and tag != "latest" and "." in tag, container["image"]


@pytest.fixture(scope="module")
def kube(control_plane: Any) -> Any:
    control_plane.create_namespace("dev-backing-checks")
    return control_plane


@pytest.fixture(scope="module")
def rendered(kube: Any) -> list[dict[str, Any]]:
    """``kubectl kustomize manifests/dev`` with the test bed's kubectl, as kind-up.sh's
    ``kubectl apply -k`` builds it."""
    built = kube.kubectl("kustomize", str(DEV_DIR)).stdout
    return [document for document in yaml.safe_load_all(built) if document]


@pytest.mark.kube
def test_apiserver_accepts_every_object_in_a_server_side_dry_run(
        kube: Any, rendered: list[dict[str, Any]]) -> None:
    assert {d["kind"] for d in rendered} >= {"Service", "StatefulSet", "Deployment"}
    for manifest in rendered:
        assert manifest["metadata"]["namespace"] == "kommerce-shop"
        manifest = json.loads(json.dumps(manifest))
        manifest["metadata"]["namespace"] = "dev-backing-checks"
        result = kube.kubectl("apply", "--server-side", "--dry-run=server",
                              "--validate=strict", "--field-manager=kommerce-testbed",
                              "-f", "-", input_text=json.dumps(manifest), check=False)
        what = f"{manifest['kind']}/{manifest['metadata']['name']}"
        assert result.returncode == 0, f"{what}: {result.stderr}"


@pytest.mark.kube
def test_every_address_the_samples_name_is_a_service_port_of_a_workload(
        rendered: list[dict[str, Any]]) -> None:
    services = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Service"}
    workloads = [d for d in rendered if d["kind"] in ("Deployment", "StatefulSet")]
    for setting, (host, port) in _sample_addresses().items():
        assert host in services, f"{setting} points at {host}, which manifests/dev lacks"
        service = services[host]
        (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port] or [None]
        assert service_port is not None, f"{setting}: Service {host} has no port {port}"
        # The Service selects a workload whose container has the port it targets by name.
        selector = service["spec"]["selector"]
        (workload,) = [w for w in workloads
                       if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        container_ports = {p["name"] for c in workload["spec"]["template"]["spec"]["containers"]
                           for p in c["ports"]}
        assert service_port["targetPort"] in container_ports, setting


@pytest.mark.kube
def test_every_database_the_samples_name_is_created_with_their_credentials(
        rendered: list[dict[str, Any]]) -> None:
    (credentials,) = [d for d in rendered if d["metadata"]["name"] == "postgres-credentials"]
    user, password = (credentials["stringData"]["POSTGRES_USER"],
                      credentials["stringData"]["POSTGRES_PASSWORD"])
    databases = _postgres_databases(rendered)
    for document in load_yaml_documents(SAMPLES_DIR / "backing-services.yaml"):
        url = (document.get("stringData") or {}).get("url", "")
        if url.startswith("postgresql"):
            parts = urlsplit(url)
            assert (parts.username, parts.password) == (user, password), url
            assert parts.path.lstrip("/") in databases, url
            assert not parts.query, f"asyncpg refuses query parameters such as {parts.query}"
