"""The local control plane is a real cluster: controllers, scheduler, kwok, RBAC, Istio CRDs."""

from __future__ import annotations

import json
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.ports import wait_until

pytestmark = pytest.mark.kube


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    return control_plane.create_namespace(f"bed-{uuid.uuid4().hex[:8]}")


def _deployment(name: str, replicas: int) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}},
        },
    }


def test_deployment_becomes_available_on_kwok_nodes(control_plane: ControlPlane,
                                                     namespace: str) -> None:
    apps = client.AppsV1Api(control_plane.api_client())
    apps.create_namespaced_deployment(namespace, _deployment("web", 3))

    def available() -> bool:
        status = apps.read_namespaced_deployment_status("web", namespace).status
        conditions = {c.type: c.status for c in status.conditions or []}
        return status.available_replicas == 3 and conditions.get("Available") == "True"

    wait_until(available, timeout=60, what="deployment web")
    pods = client.CoreV1Api(control_plane.api_client()).list_namespaced_pod(namespace).items
    assert len(pods) == 3
    assert all(p.status.phase == "Running" and p.spec.node_name.startswith("kwok-node")
               for p in pods)


def test_garbage_collector_removes_replicasets_and_pods_of_deleted_deployment(
        control_plane: ControlPlane, namespace: str) -> None:
    api = control_plane.api_client()
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, _deployment("doomed", 2))
    wait_until(lambda: len(core.list_namespaced_pod(namespace).items) == 2, timeout=60,
               what="pods of doomed")

    apps.delete_namespaced_deployment(
        "doomed", namespace, body=client.V1DeleteOptions(propagation_policy="Background"))

    def collected() -> bool:
        return not apps.list_namespaced_replica_set(namespace).items and \
            not core.list_namespaced_pod(namespace).items
    wait_until(collected, timeout=60, what="garbage collection of doomed")


def test_istio_virtualservice_with_wrong_field_type_is_rejected(
        control_plane: ControlPlane, namespace: str) -> None:
    custom = client.CustomObjectsApi(control_plane.api_client())
    bad = {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "bad"},
        "spec": {"hosts": "not-a-list", "http": [{"timeout": 5}]},
    }
    with pytest.raises(ApiException) as rejected:
        custom.create_namespaced_custom_object("networking.istio.io", "v1", namespace,
                                               "virtualservices", bad)
    assert rejected.value.status == 422
    assert "spec.hosts" in json.loads(rejected.value.body)["message"]

    good = {**bad, "metadata": {"name": "good"},
            "spec": {"hosts": ["product"], "http": [{"timeout": "5s", "route": [
                {"destination": {"host": "product"}}]}]}}
    custom.create_namespaced_custom_object("networking.istio.io", "v1", namespace,
                                           "virtualservices", good)


def test_service_account_is_held_to_its_rbac_permissions(control_plane: ControlPlane,
                                                         namespace: str) -> None:
    control_plane.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    control_plane.kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods",
                          "-n", namespace)
    control_plane.kubectl("create", "rolebinding", "reader-pods", "--role=pod-reader",
                          f"--serviceaccount={namespace}:reader", "-n", namespace)
    as_reader = control_plane.service_account_kubeconfig(namespace, "reader")

    def can(verb: str, resource: str) -> str:
        return control_plane.kubectl("auth", "can-i", verb, resource, "-n", namespace,
                                     kubeconfig=as_reader, check=False).stdout.strip()

    assert can("list", "pods") == "yes"
    assert can("create", "deployments") == "no"
    core = client.CoreV1Api(control_plane.api_client(as_reader))
    core.list_namespaced_pod(namespace)
    with pytest.raises(ApiException) as denied:
        core.list_namespaced_secret(namespace)
    assert denied.value.status == 403
