"""Small helpers the control-plane tests of issue-17's behaviours share (kubectl in JSON)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from kommerce.testbed.kube import ControlPlane


def apply(plane: ControlPlane, manifest: dict[str, Any], namespace: str,
          check: bool = True) -> Any:
    return plane.kubectl("apply", "-n", namespace, "-f", "-",
                         input_text=yaml.safe_dump(manifest), check=check)


def get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def status(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return (get(plane, kind, name, namespace) or {}).get("status") or {}


def condition(obj_status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj_status.get("conditions") or [] if c["type"] == type_), {})


def events(plane: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    """Every Event about objects named ``name`` in ``namespace``, oldest first."""
    items = plane.kubectl_json("get", "events", "-n", namespace, "--field-selector",
                               f"involvedObject.name={name}")["items"]
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def event_reasons(plane: ControlPlane, namespace: str, name: str) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in events(plane, namespace, name)]


def commerce_service(name: str, **spec: Any) -> dict[str, Any]:
    """A small CommerceService: one Pod, no autoscaling, one route (a None drops a key)."""
    merged = {"component": "review", "image": "shop:1", "replicas": 1,
              "autoscaling": {"enabled": False}, "routes": [{"pathPrefix": f"/api/{name}"}],
              **spec}
    return {"apiVersion": "kommerce.io/v1alpha1", "kind": "CommerceService",
            "metadata": {"name": name},
            "spec": {key: value for key, value in merged.items() if value is not None}}
