"""The real apiserver accepts the CRDs, serves `kubectl explain` from them, refuses each
invalid spec with the same message the operator gives, and accepts the sample shop and
every child the operator would render for it (Istio routes included)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from operators.crdgen import RESOURCES

from .conftest import ROOT
from .test_golden import sample_shop_manifests
from .test_specs import INVALID

pytestmark = pytest.mark.kube

# Messages that only the pydantic model words this way; the apiserver's schema validation
# refuses the same input in its own words ("Unsupported value", "should match").
_SCHEMA_LEVEL = ("Input should be", "String should match", "Extra inputs",
                 "is not a Kubernetes quantity", "List should have at least")
_KINDS = {resource.spec_model: resource.kind for resource in RESOURCES}
_CEL_CASES = [case for case in INVALID if not case[4].startswith(_SCHEMA_LEVEL)]


@pytest.fixture(scope="module")
def kube(control_plane: Any) -> Any:
    control_plane.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          *(f"crd/{resource.crd_name}" for resource in RESOURCES))
    control_plane.create_namespace("crd-checks")
    return control_plane


def _dry_run(kube: Any, manifest: dict[str, Any]) -> Any:
    return kube.kubectl("create", "--dry-run=server", "--validate=strict", "-n", "crd-checks",
                        "-f", "-", input_text=json.dumps(manifest), check=False)


def test_kubectl_explain_reads_the_field_descriptions(kube: Any) -> None:
    # The apiserver publishes a new CRD's OpenAPI a moment after it is Established.
    deadline = time.monotonic() + 30
    while True:
        result = kube.kubectl("explain", "commerceservice.spec.autoscaling", check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    explained = result.stdout
    assert "Horizontal Pod autoscaling." in explained
    assert "minReplicas" in explained and "Fewest Pods." in explained


@pytest.mark.parametrize(("model", "spec", "message"),
                         [(case[1], case[2], case[4]) for case in _CEL_CASES],
                         ids=[case[0] for case in _CEL_CASES])
def test_apiserver_refuses_an_invalid_spec_with_the_operators_message(
        kube: Any, model: type[BaseModel], spec: dict[str, Any], message: str) -> None:
    result = _dry_run(kube, {"apiVersion": "kommerce.io/v1alpha1", "kind": _KINDS[model],
                             "metadata": {"name": "invalid"}, "spec": spec})
    assert result.returncode != 0
    assert message in result.stderr


def test_apiserver_refuses_a_change_of_component(kube: Any) -> None:
    # A real object, in a namespace of its own: an operator running in the same session
    # reconciles it, and its children must not collide with the dry runs in crd-checks.
    namespace = kube.create_namespace("crd-immutable")
    service = {"apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
               "metadata": {"name": "immutable", "namespace": namespace},
               "spec": {"component": "review", "image": "kommerce:1"}}
    kube.kubectl_apply_manifest(service)
    try:
        service["spec"]["component"] = "order"
        result = kube.kubectl("apply", "--server-side", "--field-manager=kommerce-testbed",
                              "-f", "-", input_text=yaml.safe_dump(service), check=False)
        assert result.returncode != 0
        assert "component cannot be changed" in result.stderr
    finally:
        kube.kubectl("delete", "commerceservice", "immutable", "-n", namespace, "--wait=false")


def test_apiserver_accepts_the_sample_shop(kube: Any) -> None:
    built = kube.kubectl("kustomize", str(ROOT / "manifests" / "samples")).stdout
    for manifest in yaml.safe_load_all(built):
        if manifest["kind"] == "Namespace":
            continue  # checked in crd-checks, so that nothing here touches the shop's namespace
        manifest["metadata"]["namespace"] = "crd-checks"
        result = _dry_run(kube, manifest)
        assert result.returncode == 0, result.stderr


def test_apiserver_accepts_every_child_rendered_for_the_sample_shop(
        kube: Any, sample_documents: list[dict[str, Any]]) -> None:
    for manifests in sample_shop_manifests(sample_documents).values():
        for manifest in manifests:
            manifest = json.loads(json.dumps(manifest))
            manifest["metadata"].pop("ownerReferences")  # owners do not exist here
            manifest["metadata"]["namespace"] = "crd-checks"
            result = _dry_run(kube, manifest)
            assert result.returncode == 0, result.stderr
