"""CircuitBreakerPolicy on the real control plane: merged into the target's Istio routes
(which Istio's real CRD schemas accept), published for callers' HTTP clients, and removed
again without touching anything else.

The client breaker itself — opening on failures, half-opening after the reset timeout,
closing on a good trial — runs against a real failing HTTP server in
``tests/services/core/test_http_breaker.py``; here we check that the ConfigMap this
operator writes is what that client loads.
"""

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
from services.core.http import load_breaker_config

pytestmark = pytest.mark.kube

DEFAULT_TIMEOUT = "15s"  # operators.istio's default without a policy


@pytest.fixture
def namespace(control_plane: ControlPlane, kommerce_operator: OperatorProcess) -> str:
    return control_plane.create_namespace(f"cb-{uuid.uuid4().hex[:8]}")


def _apply(plane: ControlPlane, manifest: dict[str, Any], namespace: str) -> None:
    plane.kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(manifest))


def _get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    return next((c for c in (obj or {}).get("status", {}).get("conditions", [])
                 if c["type"] == type_), {})


def _service(plane: ControlPlane, namespace: str, name: str) -> None:
    _apply(plane, {"apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
                   "metadata": {"name": name},
                   "spec": {"component": "payment", "image": "shop:1", "replicas": 1,
                            "autoscaling": {"enabled": False},
                            "routes": [{"pathPrefix": f"/api/{name}"}]}}, namespace)


def _policy(name: str, target: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kommerce.io/v1alpha1", "kind": "CircuitBreakerPolicy",
            "metadata": {"name": name}, "spec": {"targetRef": {"name": target}, **spec}}


POLICY = {
    "connectionPool": {"maxConnections": 50, "http1MaxPendingRequests": 20,
                       "maxRequestsPerConnection": 100, "connectTimeout": "2s"},
    "outlierDetection": {"consecutive5xxErrors": 3, "interval": "5s",
                         "baseEjectionTime": "15s", "maxEjectionPercent": 30},
    "retries": {"attempts": 1, "perTryTimeout": "2s", "retryOn": "connect-failure"},
    "timeout": "4s",
    "client": {"timeout": "2s", "errorThresholdPercentage": 40, "resetTimeout": "20s",
               "rollingWindow": "5s", "rollingBuckets": 5},
}
MESH = {
    "connectionPool": {"http": {"http1MaxPendingRequests": 20, "maxRequestsPerConnection": 100},
                       "tcp": {"connectTimeout": "2s", "maxConnections": 50}},
    "outlierDetection": {"baseEjectionTime": "15s", "consecutive5xxErrors": 3,
                         "interval": "5s", "maxEjectionPercent": 30},
}


def _wait_in_force(plane: ControlPlane, namespace: str, name: str) -> None:
    wait_until(lambda: _condition(_get(plane, "cbp", name, namespace), "Ready").get("status")
               == "True", timeout=60, what=f"policy {name} in force", interval=0.2)


def _routes(plane: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    return (_get(plane, "virtualservice.networking.istio.io", name, namespace)
            or {})["spec"]["http"]


def _traffic_policy(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return (_get(plane, "destinationrule.networking.istio.io", name, namespace)
            or {})["spec"]["trafficPolicy"]


def test_a_policy_is_merged_into_the_targets_routes_and_the_apiserver_accepts_them(
        control_plane: ControlPlane, namespace: str) -> None:
    _service(control_plane, namespace, "pay")
    _apply(control_plane, _policy("pay-breaker", "pay", **POLICY), namespace)
    _wait_in_force(control_plane, namespace, "pay-breaker")
    traffic = _traffic_policy(control_plane, namespace, "pay")
    assert traffic["connectionPool"] == MESH["connectionPool"]
    assert traffic["outlierDetection"] == MESH["outlierDetection"]
    for route in _routes(control_plane, namespace, "pay"):
        assert route["timeout"] == "4s"
        assert route["retries"] == {"attempts": 1, "perTryTimeout": "2s",
                                    "retryOn": "connect-failure"}
    policy = _get(control_plane, "cbp", "pay-breaker", namespace) or {}
    assert policy["status"]["targetHost"] == f"pay.{namespace}.svc.cluster.local"
    assert "merged into DestinationRule and VirtualService pay" in \
        _condition(policy, "Ready")["message"]


def test_the_client_breaker_config_map_is_what_callers_load(control_plane: ControlPlane,
                                                            namespace: str,
                                                            tmp_path: Path) -> None:
    _service(control_plane, namespace, "pay")
    _apply(control_plane, _policy("pay-breaker", "pay", **POLICY), namespace)
    _wait_in_force(control_plane, namespace, "pay-breaker")
    config_map = _get(control_plane, "configmap", "kommerce-circuit-breakers", namespace) or {}
    assert set(config_map["data"]) == {"pay.json"}
    for key, text in config_map["data"].items():  # as the kubelet mounts it
        (tmp_path / key).write_text(text)
    breaker = load_breaker_config(tmp_path).policy_for("pay")
    assert (breaker.timeout_seconds, breaker.error_threshold_percentage,
            breaker.reset_timeout_seconds, breaker.rolling_window_seconds,
            breaker.rolling_window_buckets) == (2.0, 40.0, 20.0, 5.0, 5)
    defaults = load_breaker_config(tmp_path).policy_for("someone-else")
    assert (defaults.timeout_seconds, defaults.error_threshold_percentage,
            defaults.reset_timeout_seconds) == (3.0, 50.0, 30.0)


def test_deleting_a_policy_removes_its_settings_and_nothing_else(control_plane: ControlPlane,
                                                                namespace: str) -> None:
    for name in ("pay", "ship"):
        _service(control_plane, namespace, name)
        _apply(control_plane, _policy(f"{name}-breaker", name, **POLICY), namespace)
    for name in ("pay", "ship"):
        _wait_in_force(control_plane, namespace, f"{name}-breaker")
    control_plane.kubectl("delete", "cbp", "pay-breaker", "-n", namespace)

    def pay_back_to_defaults() -> bool:
        traffic = _traffic_policy(control_plane, namespace, "pay")
        return "outlierDetection" not in traffic and all(
            route["timeout"] == DEFAULT_TIMEOUT
            for route in _routes(control_plane, namespace, "pay"))
    wait_until(pay_back_to_defaults, timeout=30, what="pay's routes back to the defaults",
               interval=0.2)
    wait_until(lambda: set((_get(control_plane, "configmap", "kommerce-circuit-breakers",
                                 namespace) or {}).get("data", {})) == {"ship.json"},
               timeout=30, what="pay.json gone from the client settings", interval=0.2)
    assert _traffic_policy(control_plane, namespace, "ship")["outlierDetection"] == \
        MESH["outlierDetection"]
    assert _condition(_get(control_plane, "cbp", "ship-breaker", namespace),
                      "Ready")["status"] == "True"
    pay = _get(control_plane, "commerceservice", "pay", namespace)
    assert pay is not None and _get(control_plane, "deployment", "pay", namespace) is not None
    wait_until(lambda: _condition(_get(control_plane, "commerceservice", "pay", namespace),
                                  "Ready").get("status") == "True", timeout=30,
               what="pay still Ready", interval=0.2)


def test_a_policy_for_a_released_service_covers_both_colours(control_plane: ControlPlane,
                                                             namespace: str) -> None:
    _service(control_plane, namespace, "pay")
    _apply(control_plane, {"apiVersion": "kommerce.io/v1alpha1", "kind": "BlueGreenRollout",
                           "metadata": {"name": "pay"},
                           "spec": {"serviceRef": {"name": "pay"}, "blue": {"image": "shop:1"},
                                    "green": {"image": "shop:2"}, "replicas": 1}}, namespace)
    wait_until(lambda: (_get(control_plane, "bgr", "pay", namespace) or {}).get(
        "status", {}).get("activeColor") == "blue", timeout=60, what="rollout carries traffic",
        interval=0.2)
    _apply(control_plane, _policy("pay-breaker", "pay", **POLICY), namespace)
    _wait_in_force(control_plane, namespace, "pay-breaker")
    rule = (_get(control_plane, "destinationrule.networking.istio.io", "pay", namespace)
            or {})["spec"]
    assert [subset["name"] for subset in rule["subsets"]] == ["blue", "green"]
    assert rule["trafficPolicy"]["outlierDetection"] == MESH["outlierDetection"]
    for route in _routes(control_plane, namespace, "pay"):
        assert [d["destination"]["subset"] for d in route["route"]] == ["blue", "green"]
        assert route["timeout"] == "4s"


def test_a_policy_waits_for_its_target_and_conflicting_policies_are_reported(
        control_plane: ControlPlane, namespace: str) -> None:
    _apply(control_plane, _policy("early", "later"), namespace)
    wait_until(lambda: _condition(_get(control_plane, "cbp", "early", namespace),
                                  "Degraded").get("reason") == "TargetNotFound",
               timeout=30, what="TargetNotFound", interval=0.2)
    _apply(control_plane, _policy("second", "later", timeout="7s"), namespace)
    _service(control_plane, namespace, "later")
    _wait_in_force(control_plane, namespace, "early")
    wait_until(lambda: _condition(_get(control_plane, "cbp", "second", namespace),
                                  "Degraded").get("reason") == "PolicyConflict",
               timeout=30, what="the second policy reported as a conflict", interval=0.2)
    assert "early (the oldest) applies, delete or retarget second" in _condition(
        _get(control_plane, "cbp", "second", namespace), "Degraded")["message"]
    assert all(route["timeout"] == "10s" for route in _routes(control_plane, namespace, "later"))
