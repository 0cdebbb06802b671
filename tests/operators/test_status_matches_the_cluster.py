"""Status says what the cluster shows, on the real control plane: a service missing its
envFrom Secret is not Ready and its routes stay unpublished; a policy whose target is gone
stops claiming to be in force and writes no file for it; the Ready Event's count is the
status's; a ShardLayout that cannot publish is not Stable; `kubectl get` shows why."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.operator import OperatorProcess
from kommerce.testbed.ports import wait_until

from .kube_helpers import apply, commerce_service, condition, event_reasons, events, get, status

pytestmark = pytest.mark.kube


@pytest.fixture
def namespace(control_plane: ControlPlane, kommerce_operator: OperatorProcess) -> str:
    return control_plane.create_namespace(f"truth-{uuid.uuid4().hex[:8]}")


def _routes(plane: ControlPlane, namespace: str) -> set[str]:
    config_map = get(plane, "configmap", "kommerce-gateway-routes", namespace)
    if config_map is None:
        return set()
    return {r["pathPrefix"] for r in json.loads(config_map["data"]["routes.json"])["routes"]}


def test_a_service_missing_its_env_from_secret_is_not_ready_and_not_routed(
        control_plane: ControlPlane, namespace: str) -> None:
    apply(control_plane, commerce_service("reviews", routes=[{"pathPrefix": "/api/reviews"}]),
          namespace)
    apply(control_plane, commerce_service("ratings", routes=[{"pathPrefix": "/api/ratings"}],
                                          envFrom=[{"secretRef": {"name": "ratings-env"}}]),
          namespace)
    wait_until(lambda: _routes(control_plane, namespace) == {"/api/reviews"}, timeout=60,
               what="the healthy service routed", interval=0.2)
    # kwok makes the Pods Ready whatever they reference; the Deployment is Available.
    wait_until(lambda: ((get(control_plane, "deployment", "ratings", namespace) or {})
                        .get("status") or {}).get("availableReplicas") == 1, timeout=60,
               what="the Deployment Available", interval=0.2)
    time.sleep(2)  # the Deployment's events have been seen by the operator
    ratings = status(control_plane, "csvc", "ratings", namespace)
    assert condition(ratings, "Ready")["status"] == "False"
    assert condition(ratings, "Ready")["reason"] == "SecretNotFound"
    assert (condition(ratings, "Degraded")["status"], ratings["reason"]) == (
        "True", "SecretNotFound")
    assert "/api/ratings" not in _routes(control_plane, namespace)
    assert ("Normal", "Ready") not in event_reasons(control_plane, namespace, "ratings")
    printed = control_plane.kubectl("get", "csvc", "ratings", "-n", namespace).stdout
    header, row = printed.splitlines()[:2]
    assert header.split()[-5:] == ["READY", "DEGRADED", "REASON", "AGE", "MESSAGE"]
    assert "False" in row and "True" in row and "SecretNotFound" in row

    control_plane.kubectl("create", "secret", "generic", "ratings-env", "-n", namespace,
                          "--from-literal=FEATURE=on")
    wait_until(lambda: condition(status(control_plane, "csvc", "ratings", namespace),
                                 "Ready").get("status") == "True", timeout=60,
               what="Ready once the Secret exists", interval=0.5)
    wait_until(lambda: "/api/ratings" in _routes(control_plane, namespace), timeout=30,
               what="its routes published then", interval=0.2)


def test_the_ready_event_names_the_count_status_shows(control_plane: ControlPlane,
                                                      namespace: str) -> None:
    # The HPA raises the Deployment from 1 to minReplicas after it first became Ready.
    apply(control_plane, commerce_service("catalog", replicas=None,
                                          autoscaling={"minReplicas": 3, "maxReplicas": 5}),
          namespace)

    def settled() -> bool:
        service_status = status(control_plane, "csvc", "catalog", namespace)
        return condition(service_status, "Ready").get("status") == "True" and \
            service_status.get("readyReplicas") == 3 and service_status.get("replicas") == 3
    wait_until(settled, timeout=90, what="3 of 3 Pods Ready", interval=0.5)
    message = condition(status(control_plane, "csvc", "catalog", namespace), "Ready")["message"]
    wait_until(lambda: [e["message"] for e in events(control_plane, namespace, "catalog")
                        if e["reason"] in ("Ready", "Scaled")][-1:] == [message], timeout=15,
               what=f"the latest Ready/Scaled Event saying {message!r}", interval=0.5)


def _policy(name: str, target: str) -> dict[str, Any]:
    return {"apiVersion": "kommerce.io/v1alpha1", "kind": "CircuitBreakerPolicy",
            "metadata": {"name": name}, "spec": {"targetRef": {"name": target}}}


def _breaker_files(plane: ControlPlane, namespace: str) -> set[str]:
    config_map = get(plane, "configmap", "kommerce-circuit-breakers", namespace)
    return set((config_map or {}).get("data") or {})


def test_a_policy_whose_target_is_deleted_is_no_longer_in_force(
        control_plane: ControlPlane, namespace: str) -> None:
    apply(control_plane, commerce_service("pay"), namespace)
    apply(control_plane, commerce_service("ship"), namespace)
    apply(control_plane, _policy("pay-breaker", "pay"), namespace)
    apply(control_plane, _policy("ship-breaker", "ship"), namespace)
    for name in ("pay-breaker", "ship-breaker"):
        wait_until(lambda n=name: condition(status(control_plane, "cbp", n, namespace),
                                            "Ready").get("status") == "True",
                   timeout=60, what=f"{name} in force", interval=0.2)
    assert _breaker_files(control_plane, namespace) == {"pay.json", "ship.json"}
    control_plane.kubectl("delete", "csvc", "pay", "-n", namespace)
    wait_until(lambda: condition(status(control_plane, "cbp", "pay-breaker", namespace),
                                 "Ready").get("reason") == "TargetNotFound", timeout=30,
               what="the policy out of force", interval=0.2)
    policy = status(control_plane, "cbp", "pay-breaker", namespace)
    assert condition(policy, "Ready")["status"] == "False"
    assert policy["reason"] == "TargetNotFound"
    assert _breaker_files(control_plane, namespace) == {"ship.json"}
    assert ("Warning", "TargetNotFound") in event_reasons(control_plane, namespace,
                                                          "pay-breaker")
    assert condition(status(control_plane, "cbp", "ship-breaker", namespace),
                     "Ready")["status"] == "True"


def test_a_policy_for_a_missing_target_writes_no_file_and_says_so(
        control_plane: ControlPlane, namespace: str) -> None:
    apply(control_plane, commerce_service("pay"), namespace)
    apply(control_plane, _policy("pay-breaker", "pay"), namespace)
    apply(control_plane, _policy("ghost-breaker", "ghost"), namespace)
    wait_until(lambda: condition(status(control_plane, "cbp", "ghost-breaker", namespace),
                                 "Degraded").get("reason") == "TargetNotFound", timeout=30,
               what="the ghost policy reported", interval=0.2)
    wait_until(lambda: condition(status(control_plane, "cbp", "pay-breaker", namespace),
                                 "Ready").get("status") == "True", timeout=60,
               what="the other policy in force", interval=0.2)
    wait_until(lambda: _breaker_files(control_plane, namespace) == {"pay.json"}, timeout=30,
               what="only the existing target's file", interval=0.2)
    assert ("Warning", "TargetNotFound") in event_reasons(control_plane, namespace,
                                                          "ghost-breaker")


def test_a_shard_layout_that_cannot_publish_is_not_stable(control_plane: ControlPlane,
                                                          namespace: str) -> None:
    apply(control_plane, {
        "apiVersion": "kommerce.io/v1alpha1", "kind": "ShardLayout",
        "metadata": {"name": "catalog"},
        "spec": {"defaultShard": "shard-1", "shards": [
            {"name": "shard-1", "database": {"name": "catalog-shard-1", "key": "url"},
             "categories": ["shoes"]}]}}, namespace)
    wait_until(lambda: condition(status(control_plane, "shl", "catalog", namespace),
                                 "Degraded").get("reason") == "SecretNotFound", timeout=30,
               what="the layout Degraded", interval=0.2)
    layout = status(control_plane, "shl", "catalog", namespace)
    assert layout["phase"] == "Blocked"
    assert condition(layout, "Degraded")["status"] == "True"
    control_plane.kubectl("create", "secret", "generic", "catalog-shard-1", "-n", namespace,
                          "--from-literal=url=postgresql://db/shard-1")
    wait_until(lambda: status(control_plane, "shl", "catalog", namespace).get("phase")
               == "Stable", timeout=30, what="Stable once published", interval=0.2)
