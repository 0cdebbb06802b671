"""The CRDs in crds/ are exactly what the models generate, and are structural, documented,
bounded (for CEL cost) and defaulted the same way pydantic defaults."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from operators import crdgen
from operators.commerceservice.spec import CommerceServiceSpec
from operators.resources import CustomResource

from .conftest import ROOT, load_yaml_documents, samples_of_kind

CRD_DIR = ROOT / "crds"


def _schema(resource: CustomResource) -> dict[str, Any]:
    return crdgen.crd_manifest(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


RESOURCES = pytest.mark.parametrize("resource", crdgen.RESOURCES, ids=lambda r: r.kind)


def test_crd_files_equal_what_the_generator_produces() -> None:
    expected = crdgen.rendered_files()
    on_disk = {path.name: path.read_text() for path in CRD_DIR.glob("*.yaml")}
    assert on_disk == expected, "crds/ is stale: run `python -m operators.crdgen`"


def test_generator_check_mode_reports_a_stale_directory(tmp_path: Any) -> None:
    crdgen.write(tmp_path)
    assert crdgen.main(["--check", str(tmp_path)]) == 0
    (tmp_path / "shardlayout.yaml").write_text("stale\n")
    assert crdgen.main(["--check", str(tmp_path)]) == 1


def test_kustomization_lists_every_crd_file() -> None:
    (kustomization,) = load_yaml_documents(CRD_DIR / "kustomization.yaml")
    files = {path.name for path in CRD_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


@RESOURCES
def test_every_field_has_a_description_for_kubectl_explain(resource: CustomResource) -> None:
    root = _schema(resource)
    for name in ("spec", "status"):
        for path, node in _walk(root["properties"][name], name):
            scalar_item = path.endswith("[]") and node.get("type") != "object"
            assert scalar_item or node.get("description"), \
                f"{resource.kind} {path} has no description"


@RESOURCES
def test_schemas_are_structural(resource: CustomResource) -> None:
    for path, node in _walk(_schema(resource), resource.kind):
        assert "$ref" not in node and "allOf" not in node and "oneOf" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "anyOf" not in node, path
        assert node.get("type") in {"object", "array", "string", "integer", "number",
                                    "boolean"}, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "uniqueItems" not in node, path


@RESOURCES
def test_spec_lists_and_strings_are_bounded_so_cel_stays_in_budget(
        resource: CustomResource) -> None:
    for path, node in _walk(_schema(resource)["properties"]["spec"], "spec"):
        if node.get("type") == "array":
            assert "maxItems" in node, f"{resource.kind} {path} needs maxItems"
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, f"{resource.kind} {path} needs maxLength"


@RESOURCES
def test_crd_serves_status_subresource_short_names_and_ready_column(
        resource: CustomResource) -> None:
    crd = crdgen.crd_manifest(resource)
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["metadata"]["name"] == f"{resource.plural}.kommerce.io"
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"] == list(resource.short_names)
    columns = {column["name"]: column["jsonPath"]
               for column in version["additionalPrinterColumns"]}
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_commerce_service_columns_show_component_image_and_ready_pods() -> None:
    columns = {c.name: c.json_path for c in crdgen.COMMERCESERVICE.printer_columns}
    assert columns["Component"] == ".spec.component"
    assert columns["Image"] == ".spec.image"
    assert columns["Ready-Pods"] == ".status.readyReplicas"


def test_rollout_columns_show_active_colour_and_phase() -> None:
    columns = {c.name: c.json_path for c in crdgen.BLUEGREEN.printer_columns}
    assert columns["Active"] == ".status.activeColor"
    assert columns["Phase"] == ".status.phase"


def test_short_names_are_the_documented_ones() -> None:
    assert {r.kind: r.short_names for r in crdgen.RESOURCES} == {
        "CommerceService": ("csvc",), "BlueGreenRollout": ("bgr",),
        "CircuitBreakerPolicy": ("cbp",), "ShardLayout": ("shl",)}


@RESOURCES
def test_conditions_are_a_map_list_keyed_by_type(resource: CustomResource) -> None:
    conditions = _schema(resource)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) >= {"type", "status", "lastTransitionTime"}


def test_preserve_unknown_fields_appears_only_in_kopf_bookkeeping() -> None:
    # Kopf's peering status, and status.kopf of our kinds (where the operator keeps Kopf's
    # handler progress and diff base instead of annotations users would trip over).
    for path in CRD_DIR.glob("*.yaml"):
        text = path.read_text()
        expected = 2 if path.name == crdgen.KOPF_PEERING_FILE else 0
        if path.name != crdgen.KOPF_PEERING_FILE and path.name != "kustomization.yaml":
            expected = 1
        assert text.count("x-kubernetes-preserve-unknown-fields") == expected, path.name
    for resource in crdgen.RESOURCES:
        status = _schema(resource)["properties"]["status"]["properties"]
        assert status["kopf"]["x-kubernetes-preserve-unknown-fields"] is True


def test_crds_validate_against_the_apiextensions_schema(api_schemas: Any) -> None:
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for document in load_yaml_documents(path):
            if document["kind"] == "CustomResourceDefinition":
                assert api_schemas.errors(document) == [], path.name


# --- defaulting: the apiserver and pydantic must fill in the same values ------------------


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the apiserver does it: absent fields with a default get it,
    then defaulting recurses into objects and list items."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, child in schema["properties"].items():
            if name not in out and "default" in child:
                out[name] = child["default"]
            if name in out:
                out[name] = _apply_defaults(child, out[name])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_apply_defaults(schema["items"], item) for item in value]
    return value


def _without_empty_lists(value: Any) -> Any:
    """Pydantic fills an absent list with ``[]``; the apiserver leaves it absent. The
    renderers treat both alike, so the comparison does too."""
    if isinstance(value, dict):
        return {k: _without_empty_lists(v) for k, v in value.items() if v != []}
    if isinstance(value, list):
        return [_without_empty_lists(item) for item in value]
    return value


@pytest.mark.parametrize("kind", ["CommerceService", "ShardLayout", "BlueGreenRollout",
                                  "CircuitBreakerPolicy"])
def test_apiserver_defaults_equal_pydantic_defaults_for_every_sample(
        sample_documents: list[dict[str, Any]], kind: str) -> None:
    resource = next(r for r in crdgen.RESOURCES if r.kind == kind)
    spec_schema = _schema(resource)["properties"]["spec"]
    for sample in samples_of_kind(sample_documents, kind):
        defaulted = _apply_defaults(spec_schema, sample["spec"])
        model = resource.spec_model.model_validate(sample["spec"])
        assert _without_empty_lists(defaulted) == _without_empty_lists(model.wire())


def test_minimal_commerce_service_is_defaulted_to_the_reference_sizing() -> None:
    spec_schema = _schema(crdgen.COMMERCESERVICE)["properties"]["spec"]
    minimal = {"component": "product", "image": "kommerce:1"}
    defaulted = _apply_defaults(spec_schema, minimal)
    assert defaulted["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"},
                                      "limits": {"cpu": "500m", "memory": "512Mi"}}
    assert defaulted["probes"]["liveness"]["path"] == "/health"
    assert defaulted["probes"]["readiness"]["path"] == "/ready"
    assert defaulted["autoscaling"]["minReplicas"] == 3
    assert defaulted["autoscaling"]["maxReplicas"] == 10
    wire = CommerceServiceSpec.model_validate(minimal).wire()
    assert _without_empty_lists(wire) == defaulted
