"""manifests/: the operator installs with least privilege, and the sample shop is the
reference platform (eight components, its sizing, rate limits and shards)."""

from __future__ import annotations

from typing import Any

from operators.commerceservice.render import CHILD_KINDS
from operators.commerceservice.spec import Component
from operators.crdgen import RESOURCES
from operators.schema import parse_spec
from operators.shardlayout.spec import shard_map_name

from .conftest import OPERATOR_DIR, SAMPLES_DIR, load_yaml_documents, samples_of_kind

APPLY_VERBS = {"get", "list", "watch", "create", "patch", "delete"}


def _operator_documents() -> list[dict[str, Any]]:
    """The cluster-wide install: manifests/operator and its base."""
    paths = sorted([*OPERATOR_DIR.glob("*.yaml"), *(OPERATOR_DIR / "base").glob("*.yaml")])
    return [d for path in paths if path.name != "kustomization.yaml"
            for d in load_yaml_documents(path)]


def _rules() -> list[dict[str, Any]]:
    (role,) = [d for d in _operator_documents() if d["kind"] == "ClusterRole"]
    return role["rules"]


def _verbs(group: str, resource: str) -> set[str]:
    return {verb for rule in _rules() if group in rule["apiGroups"]
            and resource in rule["resources"] for verb in rule["verbs"]}


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def test_kustomizations_list_every_manifest_in_their_folder() -> None:
    folders = (OPERATOR_DIR, OPERATOR_DIR / "base", OPERATOR_DIR / "namespaced", SAMPLES_DIR)
    for folder in folders:
        (kustomization,) = load_yaml_documents(folder / "kustomization.yaml")
        files = {path.name for path in folder.glob("*.yaml")} - {"kustomization.yaml"}
        listed = {name for name in kustomization["resources"] if name.endswith(".yaml")}
        assert listed == files, folder.name
    (top,) = load_yaml_documents(OPERATOR_DIR / "kustomization.yaml")
    (namespaced,) = load_yaml_documents(OPERATOR_DIR / "namespaced" / "kustomization.yaml")
    assert "base" in top["resources"] and "../base" in namespaced["resources"]


def test_cluster_role_has_no_wildcards() -> None:
    for rule in _rules():
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]


def test_operator_may_apply_prune_and_watch_every_child_kind() -> None:
    plural = {"ServiceAccount": "serviceaccounts", "Deployment": "deployments",
              "Service": "services", "HorizontalPodAutoscaler": "horizontalpodautoscalers",
              "PodDisruptionBudget": "poddisruptionbudgets",
              "VirtualService": "virtualservices", "DestinationRule": "destinationrules"}
    for api_version, kind in CHILD_KINDS:
        assert _verbs(_group(api_version), plural[kind]) == APPLY_VERBS, kind
    assert _verbs("", "configmaps") == APPLY_VERBS


def test_operator_watches_and_patches_its_kinds_and_their_status_but_never_deletes_them() -> None:
    for resource in RESOURCES:
        assert _verbs("kommerce.io", resource.plural) == {"get", "list", "watch", "patch"}
        assert _verbs("kommerce.io", f"{resource.plural}/status") == {"get", "patch"}


def test_operator_only_gets_secrets_by_name_and_only_creates_events() -> None:
    assert _verbs("", "secrets") == {"get"}
    assert _verbs("", "events") == {"create", "patch"}


def test_operator_has_what_kopf_needs_for_peering_and_discovery() -> None:
    assert _verbs("kopf.dev", "clusterkopfpeerings") == {"get", "list", "watch", "patch"}
    assert _verbs("apiextensions.k8s.io", "customresourcedefinitions") == {"get", "list",
                                                                           "watch"}


def test_role_binding_grants_the_role_to_the_operators_service_account() -> None:
    documents = _operator_documents()
    (binding,) = [d for d in documents if d["kind"] == "ClusterRoleBinding"]
    (account,) = [d for d in documents if d["kind"] == "ServiceAccount"]
    assert binding["roleRef"]["name"] == "kommerce-operator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]


def test_operator_deployment_runs_one_peered_instance_with_liveness_and_metrics() -> None:
    (deployment,) = [d for d in _operator_documents() if d["kind"] == "Deployment"]
    assert deployment["metadata"]["namespace"] == "kommerce-system"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kommerce-operator"
    (container,) = pod["containers"]
    assert container["args"][0] == "operator"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}


def test_operator_deployment_args_are_ones_the_kommerce_operator_command_accepts() -> None:
    import typer
    from typer.main import get_command

    from kommerce.operator_cli import run_operator

    (deployment,) = [d for d in _operator_documents() if d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    app = typer.Typer()
    app.command("operator")(run_operator)
    app.command("unused")(lambda: None)  # a group, so the first argument names the command
    group = get_command(app)
    context = group.make_context("kommerce", list(args), resilient_parsing=False)
    name, command, rest = group.resolve_command(context, list(args))
    params = command.make_context(name, rest).params
    assert (params["liveness_port"], params["metrics_port"]) == (8080, 9090)
    assert not params["standalone"], "the in-cluster operator must peer"


def test_peering_object_is_the_one_the_operator_joins() -> None:
    from operators.runtime import PEERING_NAME

    (peering,) = [d for d in _operator_documents() if d["kind"] == "ClusterKopfPeering"]
    assert peering["metadata"]["name"] == PEERING_NAME


def test_operator_manifests_pass_the_real_kubernetes_schemas(api_schemas: Any) -> None:
    for document in _operator_documents():
        if document["apiVersion"] != "kopf.dev/v1":
            assert api_schemas.errors(document) == [], document["kind"]


def test_sample_shop_declares_the_eight_components_once_each(
        sample_documents: list[dict[str, Any]]) -> None:
    components = [d["spec"]["component"]
                  for d in samples_of_kind(sample_documents, "CommerceService")]
    assert sorted(components) == sorted(c.value for c in Component)


def test_sample_services_use_the_reference_sizing_probes_and_autoscaling(
        sample_documents: list[dict[str, Any]]) -> None:
    for sample in samples_of_kind(sample_documents, "CommerceService"):
        spec = parse_spec(RESOURCES[0].spec_model, sample["spec"])
        assert spec.resources.requests.wire() == {"cpu": "250m", "memory": "256Mi"}
        assert spec.resources.limits.wire() == {"cpu": "500m", "memory": "512Mi"}
        assert (spec.probes.liveness.path, spec.probes.readiness.path) == ("/health", "/ready")
        scaling = spec.autoscaling
        assert (scaling.min_replicas, scaling.max_replicas) == (3, 10)
        assert scaling.target_cpu_utilization_percentage == 70
        assert scaling.target_memory_utilization_percentage == 80


def test_sample_routes_carry_the_reference_rate_limits(
        sample_documents: list[dict[str, Any]]) -> None:
    limits = {route["pathPrefix"]: route.get("rateLimitPerMinute")
              for sample in samples_of_kind(sample_documents, "CommerceService")
              for route in sample["spec"].get("routes", [])}
    assert limits["/api/products"] == 100
    assert limits["/api/orders"] == 50


def test_sample_secrets_and_config_maps_cover_every_reference(
        sample_documents: list[dict[str, Any]]) -> None:
    secrets = {d["metadata"]["name"] for d in samples_of_kind(sample_documents, "Secret")}
    config_maps = {d["metadata"]["name"] for d in samples_of_kind(sample_documents, "ConfigMap")}
    config_maps |= {shard_map_name(d["metadata"]["name"])  # the operator publishes these
                    for d in samples_of_kind(sample_documents, "ShardLayout")}
    for sample in samples_of_kind(sample_documents, "CommerceService"):
        spec = parse_spec(RESOURCES[0].spec_model, sample["spec"])
        assert set(spec.referenced_secrets()) <= secrets
        assert set(spec.referenced_config_maps()) <= config_maps
    for layout in samples_of_kind(sample_documents, "ShardLayout"):
        assert {s["database"]["name"] for s in layout["spec"]["shards"]} <= secrets


def test_sample_rollout_and_policies_target_sample_services(
        sample_documents: list[dict[str, Any]]) -> None:
    services = {d["metadata"]["name"] for d in samples_of_kind(sample_documents,
                                                               "CommerceService")}
    for rollout in samples_of_kind(sample_documents, "BlueGreenRollout"):
        assert rollout["spec"]["serviceRef"]["name"] in services
    for policy in samples_of_kind(sample_documents, "CircuitBreakerPolicy"):
        assert policy["spec"]["targetRef"]["name"] in services


def test_every_sample_custom_resource_is_valid(sample_documents: list[dict[str, Any]]) -> None:
    models = {resource.kind: resource.spec_model for resource in RESOURCES}
    for document in sample_documents:
        if document["kind"] in models:
            parse_spec(models[document["kind"]], document["spec"])


def test_every_sample_passes_the_crd_and_kubernetes_schemas(
        sample_documents: list[dict[str, Any]], api_schemas: Any) -> None:
    for document in sample_documents:
        assert api_schemas.errors(document) == [], document["metadata"]["name"]


CLUSTER_SCOPED_GROUPS = {"kopf.dev", "apiextensions.k8s.io"}


def test_the_namespaced_variant_grants_the_same_namespaced_rights_and_nothing_cluster_wide(
) -> None:
    (role,) = load_yaml_documents(OPERATOR_DIR / "namespaced" / "role.yaml")
    assert role["kind"] == "ClusterRole"  # a template: it grants only where a RoleBinding is
    assert role["rules"] == [rule for rule in _rules()
                             if not set(rule["apiGroups"]) & CLUSTER_SCOPED_GROUPS]
    (binding,) = load_yaml_documents(OPERATOR_DIR / "namespaced" / "role-binding.yaml")
    assert binding["kind"] == "RoleBinding"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": role["metadata"]["name"]}
