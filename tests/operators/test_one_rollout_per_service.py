"""Two BlueGreenRollouts on one CommerceService on the real control plane: the younger one
is Degraded with RolloutConflict naming the owner, touches nothing, and goes away at once
when deleted; `kommerce rollout status` and `history` agree about the last flip."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from kommerce.cli import app
from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.operator import OperatorProcess
from kommerce.testbed.ports import wait_until

from .kube_helpers import apply, event_reasons, get, status
from .test_bluegreen_operator import ON_BLUE, _create, _traffic

pytestmark = pytest.mark.kube


@pytest.fixture
def namespace(control_plane: ControlPlane, kommerce_operator: OperatorProcess) -> str:
    return control_plane.create_namespace(f"bgc-{uuid.uuid4().hex[:8]}")


def _footprint(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    """What a fight would change: the colours' owner, size and generation, and the
    resourceVersion of the Service, preview Service, PDB and traffic objects."""
    out: dict[str, Any] = {}
    for color in ("blue", "green"):
        deployment = get(plane, "deployment", f"shop-{color}", namespace) or {}
        meta = deployment.get("metadata") or {}
        out[color] = ([r["uid"] for r in meta.get("ownerReferences") or []],
                      (deployment.get("spec") or {}).get("replicas"), meta.get("generation"))
    for kind, name in (("service", "shop"), ("service", "shop-preview"),
                       ("virtualservice.networking.istio.io", "shop"),
                       ("destinationrule.networking.istio.io", "shop")):
        out[f"{kind}/{name}"] = ((get(plane, kind, name, namespace) or {}).get("metadata")
                                 or {}).get("resourceVersion")
    return out


def test_a_second_rollout_is_degraded_naming_the_first_and_touches_nothing(
        control_plane: ControlPlane, namespace: str) -> None:
    _create(control_plane, namespace)  # rollout "shop", 2 replicas, blue carries traffic
    owner = get(control_plane, "bgr", "shop", namespace) or {}
    before = _footprint(control_plane, namespace)
    assert before["blue"][0] == [owner["metadata"]["uid"]]

    apply(control_plane, {"apiVersion": "kommerce.io/v1alpha1", "kind": "BlueGreenRollout",
                          "metadata": {"name": "another"},
                          "spec": {"serviceRef": {"name": "shop"}, "blue": {"image": "shop:2"},
                                   "replicas": 3, "progressDeadlineSeconds": 600}}, namespace)
    wait_until(lambda: status(control_plane, "bgr", "another", namespace).get("reason")
               == "RolloutConflict", timeout=30, what="the second rollout refused",
               interval=0.2)
    refused = status(control_plane, "bgr", "another", namespace)
    assert refused["phase"] == "Degraded"
    assert "already released by BlueGreenRollout shop" in refused["message"]
    degraded = next(c for c in refused["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolloutConflict")
    assert ("Warning", "RolloutConflict") in event_reasons(control_plane, namespace, "another")
    printed = control_plane.kubectl("get", "bgr", "-n", namespace).stdout
    assert "RolloutConflict" in printed.splitlines()[1 + sorted(["another", "shop"]).index(
        "another")]

    # The old fight took the colours' controller reference every 6-12 s; both rollouts
    # reconcile at least every second while one is in flight, so a few seconds would show it.
    time.sleep(8)
    assert _footprint(control_plane, namespace) == before
    assert status(control_plane, "bgr", "shop", namespace)["phase"] == "Healthy"
    assert _traffic(control_plane, "shop", namespace) == ON_BLUE

    # Its finalizer has nothing to wait for (the owner's colours carry the traffic).
    control_plane.kubectl("delete", "bgr", "another", "-n", namespace, "--timeout=30s")
    assert get(control_plane, "bgr", "another", namespace) is None
    assert _footprint(control_plane, namespace) == before


def test_a_rollout_standing_by_takes_over_once_the_owner_is_deleted(
        control_plane: ControlPlane, namespace: str) -> None:
    _create(control_plane, namespace)
    apply(control_plane, {"apiVersion": "kommerce.io/v1alpha1", "kind": "BlueGreenRollout",
                          "metadata": {"name": "next"},
                          "spec": {"serviceRef": {"name": "shop"}, "blue": {"image": "shop:1"},
                                   "replicas": 2}}, namespace)
    wait_until(lambda: status(control_plane, "bgr", "next", namespace).get("reason")
               == "RolloutConflict", timeout=30, what="the second rollout standing by")
    control_plane.kubectl("delete", "bgr", "shop", "-n", namespace, "--timeout=120s")
    wait_until(lambda: status(control_plane, "bgr", "next", namespace).get("phase")
               == "Healthy", timeout=90, what="the second rollout taking over", interval=0.5)
    blue = get(control_plane, "deployment", "shop-blue", namespace) or {}
    next_uid = (get(control_plane, "bgr", "next", namespace) or {})["metadata"]["uid"]
    assert [r["uid"] for r in blue["metadata"]["ownerReferences"]] == [next_uid]


def test_rollout_status_and_history_agree_about_the_last_flip(
        control_plane: ControlPlane, namespace: str) -> None:
    _create(control_plane, namespace)  # blue took the traffic over; nothing flipped yet
    runner = CliRunner()
    env = {"KUBECONFIG": str(control_plane.kubeconfig)}
    shown = runner.invoke(app, ["rollout", "status", "shop", "-n", namespace], env=env)
    listed = runner.invoke(app, ["rollout", "history", "shop", "-n", namespace], env=env)
    assert shown.exit_code == 0 and listed.exit_code == 0, (shown.output, listed.output)
    last_flip = next(line for line in shown.output.splitlines()
                     if line.startswith("Last flip:"))
    assert "none yet (traffic taken over from the CommerceService's own Deployment" in last_flip
    assert listed.output.startswith("No flips recorded for shop yet; traffic taken over")
