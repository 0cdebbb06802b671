"""Drift repair on the real control plane: a hand edit server-side apply cannot merge (a
port renumbered by a merge patch) is put back to the rendered object, and a repair the
API server refuses says so in status and an Event, and is retried until it succeeds."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml

from kommerce.testbed.kube import ControlPlane
from kommerce.testbed.operator import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, OperatorProcess
from kommerce.testbed.ports import wait_until

from .kube_helpers import apply, commerce_service, condition, event_reasons, events, get, status

pytestmark = pytest.mark.kube

RENDERED_PORTS = [{"name": "http", "appProtocol": "http", "protocol": "TCP", "port": 8000,
                   "targetPort": "http"}]


@pytest.fixture
def namespace(control_plane: ControlPlane, kommerce_operator: OperatorProcess) -> str:
    return control_plane.create_namespace(f"drift-{uuid.uuid4().hex[:8]}")


def _ready_service(plane: ControlPlane, namespace: str, name: str = "user-service") -> None:
    apply(plane, commerce_service(name, servicePort=8000), namespace)
    wait_until(lambda: condition(status(plane, "csvc", name, namespace), "Ready")
               .get("status") == "True", timeout=60, what=f"{name} Ready", interval=0.2)


def _ports(plane: ControlPlane, namespace: str, name: str = "user-service") -> Any:
    return ((get(plane, "service", name, namespace) or {}).get("spec") or {}).get("ports")


def _edit_port_by_hand(plane: ControlPlane, namespace: str) -> None:
    plane.kubectl("patch", "svc", "user-service", "-n", namespace, "--type", "merge", "-p",
                  json.dumps({"spec": {"ports": [{"name": "http", "port": 81}]}}))


def test_a_port_renumbered_by_a_merge_patch_is_put_back(control_plane: ControlPlane,
                                                        namespace: str) -> None:
    _ready_service(control_plane, namespace)
    assert _ports(control_plane, namespace) == RENDERED_PORTS
    _edit_port_by_hand(control_plane, namespace)
    wait_until(lambda: _ports(control_plane, namespace) == RENDERED_PORTS, timeout=30,
               what="the Service's port restored", interval=0.2)
    assert ("Normal", "DriftRepaired") in event_reasons(control_plane, namespace,
                                                        "user-service")
    assert condition(status(control_plane, "csvc", "user-service", namespace),
                     "Degraded").get("status") == "False"


def _refuse_operator_service_writes(plane: ControlPlane, namespace: str) -> str:
    """A ValidatingAdmissionPolicy (the apiserver's own CEL admission) refusing the
    operator's updates of Services in ``namespace``: a repair the API server turns down."""
    name = f"refuse-{namespace}"
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{
                     "apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                     "resources": ["services"]}]},
                 "validations": [{"expression": f"request.userInfo.username != '{user}'",
                                  "message": "Services are frozen in this namespace",
                                  "reason": "Forbidden"}]}}
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": namespace}}}}}
    plane.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all([policy, binding]))
    return name


def test_a_refused_repair_is_reported_and_retried_until_it_succeeds(
        control_plane: ControlPlane, namespace: str) -> None:
    _ready_service(control_plane, namespace)
    policy = _refuse_operator_service_writes(control_plane, namespace)
    try:
        # The policy takes a moment to be enforced: wait until a dry run made as the
        # operator's ServiceAccount is refused.
        def refused() -> bool:
            result = control_plane.kubectl(
                "label", "svc", "user-service", "-n", namespace, "probe=1", "--dry-run=server",
                f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}",
                check=False)
            return result.returncode != 0 and "frozen" in result.stderr
        wait_until(refused, timeout=30, what="the admission policy in force", interval=0.5)
        _edit_port_by_hand(control_plane, namespace)

        def reported() -> bool:
            service_status = status(control_plane, "csvc", "user-service", namespace)
            return condition(service_status, "Degraded").get("reason") == "DriftRepairFailed"
        wait_until(reported, timeout=30, what="the failed repair in status", interval=0.2)
        service_status = status(control_plane, "csvc", "user-service", namespace)
        assert service_status["reason"] == "DriftRepairFailed"
        assert "Service user-service could not be restored" in service_status["message"]
        assert "frozen" in condition(service_status, "Degraded")["message"]
        warnings = [e for e in events(control_plane, namespace, "user-service")
                    if e["reason"] == "DriftRepairFailed"]
        assert warnings and warnings[0]["type"] == "Warning"
        assert _ports(control_plane, namespace)[0]["port"] == 81
    finally:
        control_plane.kubectl("delete", "validatingadmissionpolicybinding,"
                              "validatingadmissionpolicy", policy, check=False)
    # Degraded re-runs the reconcile every 15 s: the next one repairs and clears it.
    wait_until(lambda: _ports(control_plane, namespace) == RENDERED_PORTS, timeout=90,
               what="the Service repaired once the API server allows it", interval=0.5)
    wait_until(lambda: condition(status(control_plane, "csvc", "user-service", namespace),
                                 "Degraded").get("status") == "False", timeout=30,
               what="Degraded cleared after the repair", interval=0.5)


def test_events_come_from_the_kommerce_operator_and_kopf_keeps_out_of_metadata(
        control_plane: ControlPlane, namespace: str) -> None:
    _ready_service(control_plane, namespace)
    control_plane.kubectl("delete", "svc", "user-service", "-n", namespace)
    wait_until(lambda: ("Normal", "DriftRepaired") in event_reasons(
        control_plane, namespace, "user-service"), timeout=30, what="a DriftRepaired Event")
    ours = [e for e in events(control_plane, namespace, "user-service")
            if e["involvedObject"]["kind"] == "CommerceService"]
    assert ours
    for event in ours:
        assert event["source"].get("component") == "kommerce-operator", event
        assert event["reportingComponent"] == "kommerce-operator", event
        assert event["reason"] != "Logging", event
    service = get(control_plane, "csvc", "user-service", namespace) or {}
    annotations = service["metadata"].get("annotations") or {}
    assert not [key for key in annotations if key.startswith("kommerce.io/")
                or "kopf" in key or "last-handled-configuration" in key], annotations
    assert "last-handled-configuration" in service["status"].get("kopf", {})
