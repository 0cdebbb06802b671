"""manifests/operator/namespaced: the operator confined to the namespaces it is given.

On the real control plane: the variant as kustomize renders it, with two names changed so it
can sit beside the cluster-wide install of the session (its ServiceAccount, and the
namespace its RoleBinding is in: a fresh one). The session's cluster-wide operator is
stopped meanwhile, so whatever gets reconciled was reconciled by the confined one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kommerce.testbed.cache import REPO_ROOT
from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.operator import OPERATOR_NAMESPACE, OperatorProcess
from kommerce.testbed.ports import wait_until

pytestmark = pytest.mark.kube

VARIANT = REPO_ROOT / "manifests" / "operator" / "namespaced"
ACCOUNT = "kommerce-operator-confined"


def _rendered(plane: ControlPlane) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(plane.kubectl("kustomize", str(VARIANT)).stdout)
            if doc]


def _confined_to(documents: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The RBAC of the variant, for ACCOUNT and bound in ``namespace`` (names suffixed so
    they do not replace the session's)."""
    out = []
    for doc in documents:
        kind = doc["kind"]
        if kind not in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "RoleBinding"):
            continue
        doc = json.loads(json.dumps(doc))
        doc["metadata"]["name"] = f"{doc['metadata']['name']}-confined"
        if kind == "ServiceAccount":
            doc["metadata"]["name"] = ACCOUNT
        if kind == "RoleBinding":
            doc["metadata"]["namespace"] = namespace
        if kind.endswith("Binding"):
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-confined"
            for subject in doc["subjects"]:
                subject["name"] = ACCOUNT
        out.append(doc)
    return out


def _commerce_service(name: str) -> dict[str, Any]:
    return {"apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
            "metadata": {"name": name},
            "spec": {"component": "review", "image": "shop:1", "replicas": 1,
                     "autoscaling": {"enabled": False},
                     "connections": {"database": {"secretKeyRef": {"name": "review-db",
                                                                   "key": "url"}}},
                     "routes": [{"pathPrefix": f"/api/{name}"}]}}


def _ready(plane: ControlPlane, name: str, namespace: str) -> bool:
    result = plane.kubectl("get", "commerceservice", name, "-n", namespace, "-o", "json",
                           check=False)
    conditions = (json.loads(result.stdout).get("status") or {}).get("conditions") or [] \
        if result.returncode == 0 else []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture
def confined(control_plane: ControlPlane,
             kommerce_operator: OperatorProcess) -> Iterator[tuple[OperatorProcess, str, str]]:
    """(the confined operator, its namespace, another namespace)."""
    managed = control_plane.create_namespace(f"ns-{uuid.uuid4().hex[:8]}")
    other = control_plane.create_namespace(f"ns-{uuid.uuid4().hex[:8]}")
    rbac = _confined_to(_rendered(control_plane), managed)
    control_plane.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(rbac))
    with kommerce_operator.paused():
        operator = OperatorProcess(control_plane, service_account=ACCOUNT,
                                   extra_args=("--standalone", f"--namespace={managed}"))
        operator.start()
        try:
            yield operator, managed, other
        finally:
            operator.stop()
            control_plane.kubectl("delete", "-f", "-", "--ignore-not-found",
                                  input_text=yaml.safe_dump_all(rbac))


def test_the_variant_runs_the_operator_standalone_on_the_shops_namespace(
        control_plane: ControlPlane) -> None:
    documents = _rendered(control_plane)
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "operator" and "--standalone" in args
    assert "--namespace=kommerce-shop" in args
    (binding,) = [d for d in documents if d["kind"] == "RoleBinding"]
    assert binding["metadata"]["namespace"] == "kommerce-shop"
    kinds = {d["kind"] for d in documents}
    # Nothing that grants or needs anything cluster-wide.
    assert not kinds & {"ClusterRoleBinding", "ClusterKopfPeering"}, kinds


def test_a_confined_operator_has_rights_only_in_its_namespace_and_reconciles_only_there(
        control_plane: ControlPlane, confined: tuple[OperatorProcess, str, str]) -> None:
    operator, managed, other = confined
    as_confined = control_plane.service_account_kubeconfig(OPERATOR_NAMESPACE, ACCOUNT)

    def can(*args: str) -> bool:
        result = control_plane.kubectl("auth", "can-i", *args, kubeconfig=as_confined,
                                       check=False)
        return result.stdout.strip() == "yes"

    assert can("patch", "deployments", "-n", managed)
    assert can("get", "secrets", "-n", managed)
    assert not can("list", "secrets", "-n", managed)
    for verb, resource in (("create", "deployments"), ("create", "serviceaccounts"),
                           ("get", "secrets"), ("watch", "commerceservices.kommerce.io")):
        assert not can(verb, resource, "-n", other), (verb, resource)
        assert not can(verb, resource, "--all-namespaces"), (verb, resource)

    for namespace in (managed, other):
        control_plane.kubectl("create", "secret", "generic", "review-db", "-n", namespace,
                              "--from-literal=url=postgresql://db/review")
        control_plane.kubectl("apply", "-n", namespace, "-f", "-",
                              input_text=yaml.safe_dump(_commerce_service("reviews")))
    wait_until(lambda: _ready(control_plane, "reviews", managed), timeout=90,
               what="the CommerceService in the managed namespace Ready", interval=0.3)
    deployment = control_plane.kubectl_json("get", "deployment", "reviews", "-n", managed)
    assert deployment["spec"]["replicas"] == 1
    # Nothing happens in the other namespace: no status, no children.
    untouched = control_plane.kubectl_json("get", "commerceservice", "reviews", "-n", other)
    assert "status" not in untouched
    assert control_plane.kubectl("get", "deployment", "reviews", "-n", other,
                                 check=False).returncode != 0
    log = operator.log()
    assert "forbidden" not in log.lower() and "Not enough permissions" not in log
