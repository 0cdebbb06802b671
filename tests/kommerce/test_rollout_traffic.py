"""``kommerce rollout … --wait`` answers "traffic moved" only when the Service and every mesh
route say so, not on the rollout's status alone (whatever order an operator writes them in):
read against objects on the test bed's apiserver, with no operator running."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kommerce.rollout_cli import _Cluster, _traffic_on
from kommerce.testbed.kube import ControlPlane

pytestmark = pytest.mark.kube

ROLLOUT = {"spec": {"serviceRef": {"name": "shop"}}}


def _service(color: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop"},
            "spec": {"selector": {"app": "shop", "kommerce.io/color": color},
                     "ports": [{"port": 80, "targetPort": 8000}]}}


def _routes(blue: int, green: int) -> dict[str, Any]:
    destination = {"host": "shop"}
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "shop"},
            "spec": {"hosts": ["shop"], "http": [
                {"match": [{"uri": {"prefix": prefix}}],
                 "route": [{"destination": {**destination, "subset": "blue"}, "weight": blue},
                           {"destination": {**destination, "subset": "green"},
                            "weight": green}]}
                for prefix in ("/api/shop", "/api/shop/search")]}}


def test_traffic_has_moved_when_the_service_and_every_route_agree(
        control_plane: ControlPlane) -> None:
    namespace = control_plane.create_namespace(f"traffic-{uuid.uuid4().hex[:8]}")
    cluster = _Cluster(namespace, str(control_plane.kubeconfig))

    def apply(manifest: dict[str, Any]) -> None:
        control_plane.kubectl_apply_manifest(
            {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}})

    assert not _traffic_on(cluster, ROLLOUT, "green")  # no Service yet
    apply(_service("blue"))
    assert _traffic_on(cluster, ROLLOUT, "blue")  # no mesh routes: the Service decides
    apply(_routes(100, 0))
    assert _traffic_on(cluster, ROLLOUT, "blue")
    apply(_routes(0, 100))  # the routes moved, the Service not yet
    assert not _traffic_on(cluster, ROLLOUT, "green")
    apply(_service("green"))
    assert _traffic_on(cluster, ROLLOUT, "green")
    assert not _traffic_on(cluster, ROLLOUT, "blue")
