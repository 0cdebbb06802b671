"""BlueGreenRollout -> per-colour Deployments, the preview Service and the traffic objects;
pure, no I/O.

Who owns what (the CommerceService and its rollout must never fight over a field):

* The rollout **owns** (controller reference to the BlueGreenRollout, garbage-collected with
  it) the Deployments ``<svc>-blue`` and ``<svc>-green`` and the preview Service
  ``<svc>-preview``. They are derived from the CommerceService's own render: the same Pod
  template (env, probes, resources, hardening), with the colour's image, a
  ``kommerce.io/color`` label and the rollout's replica count.
* The objects that carry traffic for the service's host — the Service ``<svc>``, the
  VirtualService and the DestinationRule — stay **owned** by the CommerceService (they go
  when it goes, and ``kubectl get`` shows the same objects with or without a rollout), but
  once the rollout has taken traffic over they are **written** by the rollout only: the
  Service selects the active colour, the DestinationRule gains subsets ``blue``/``green``
  and the VirtualService sends 100/0 between them. Istio allows one VirtualService and one
  DestinationRule per host, so the rollout cannot have objects of its own for them.
* The hand-over is declared on the CommerceService by two annotations the rollout sets
  (the :class:`~kommerce.contracts.release.Release` contract), and only after the
  first colour is Available and carries traffic. While they are set the CommerceService
  renders :func:`hand_over` of its children: its Deployment ``<svc>`` kept at 0 replicas
  (Argo Rollouts' ``workloadRef`` pattern; its HorizontalPodAutoscaler is idle, since the
  HPA controller does not scale a target at 0), and no Service, VirtualService or
  DestinationRule. Deleting the rollout removes the annotations first, waits for ``<svc>``
  to be Available again, and only then lets the colours go.

The Service ``<svc>`` selects by ``app.kubernetes.io/name``/``instance`` plus the colour;
the colours' Pods carry the same name/instance labels, so a CommerceService taking traffic
back with its plain selector serves from every colour until its own Pods are up.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from operators.bluegreen.spec import Color
from operators.meta import LABEL_VERSION, image_version, owner_reference

KIND = "BlueGreenRollout"
COLOR_LABEL = "kommerce.io/color"
ROLLOUT_LABEL = "kommerce.io/rollout"
# Not under ``kommerce.io/``, like the release annotations: Kopf keeps its own bookkeeping
# under that prefix and ignores it when deciding whether an object changed.
RETRY_ANNOTATION = "bluegreen.kommerce.io/retry"

TRAFFIC_KINDS: tuple[tuple[str, str], ...] = (
    ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "VirtualService"),
    ("v1", "Service"),
)
"""(apiVersion, kind) of the CommerceService's children the rollout writes once it carries
traffic, in the order it applies them (subsets exist before routes name them)."""


def color_deployment_name(service: str, color: Color) -> str:
    """``<svc>-blue`` / ``<svc>-green``."""
    return f"{service}-{color.value}"


def preview_service_name(service: str) -> str:
    """The Service in front of the colour that does not take traffic."""
    return f"{service}-preview"


@dataclass(frozen=True)
class ColorPlan:
    """What the decision module wants running: per colour, the image (None: no Deployment)
    and the replica count; the colour behind the preview Service; and the colour traffic goes
    to (None: the CommerceService still carries traffic itself)."""

    images: Mapping[Color, str | None]
    replicas: Mapping[Color, int]
    preview: Color
    traffic: Color | None = None


@dataclass(frozen=True)
class RolloutRender:
    """Everything one reconcile applies, in apply order, and the colours it deploys."""

    deployments: list[dict[str, Any]] = field(default_factory=list)
    preview_service: dict[str, Any] | None = None
    traffic: list[dict[str, Any]] = field(default_factory=list)

    @property
    def manifests(self) -> list[dict[str, Any]]:
        out = list(self.deployments)
        if self.preview_service is not None:
            out.append(self.preview_service)
        return out + self.traffic


def _with_color(labels: Mapping[str, str], color: Color) -> dict[str, str]:
    return dict(sorted({**labels, COLOR_LABEL: color.value}.items()))


def _owned_metadata(source: Mapping[str, Any], name: str, rollout: str, uid: str,
                    labels: dict[str, str]) -> dict[str, Any]:
    meta = {"name": name, "namespace": source["namespace"], "labels": labels,
            "ownerReferences": [owner_reference(KIND, rollout, uid)]}
    if source.get("annotations"):
        meta["annotations"] = dict(source["annotations"])
    return meta


def color_deployment(base: Mapping[str, Any], rollout: str, uid: str, color: Color,
                     image: str, replicas: int) -> dict[str, Any]:
    """One colour's Deployment, from the CommerceService's Deployment ``base``: same Pod
    template, the colour's image and label, an explicit replica count (the rollout sizes
    colours, not an HPA) and the rollout as controller."""
    deployment = copy.deepcopy(dict(base))
    service = base["metadata"]["name"]
    labels = _with_color(base["metadata"]["labels"], color)
    labels[ROLLOUT_LABEL] = rollout
    version = image_version(image)
    template = deployment["spec"]["template"]
    pod_labels = _with_color(template["metadata"]["labels"], color)
    if version:
        labels[LABEL_VERSION] = pod_labels[LABEL_VERSION] = version
    else:
        labels.pop(LABEL_VERSION, None)
        pod_labels.pop(LABEL_VERSION, None)
    template["metadata"]["labels"] = dict(sorted(pod_labels.items()))
    template["spec"]["containers"][0]["image"] = image
    for constraint in template["spec"].get("topologySpreadConstraints", []):
        constraint["labelSelector"]["matchLabels"] = _with_color(
            constraint["labelSelector"]["matchLabels"], color)
    spec = deployment["spec"]
    spec["selector"] = {"matchLabels": _with_color(spec["selector"]["matchLabels"], color)}
    rest = {key: value for key, value in spec.items() if key != "replicas"}
    deployment["spec"] = {"replicas": replicas, **rest}
    deployment["metadata"] = _owned_metadata(
        base["metadata"], color_deployment_name(service, color), rollout, uid,
        dict(sorted(labels.items())))
    return deployment


def preview_service(base: Mapping[str, Any], rollout: str, uid: str,
                    color: Color) -> dict[str, Any]:
    """``<svc>-preview``: the CommerceService's Service, selecting the idle colour, for
    pre-promotion checks and for people to try the staged version."""
    service = copy.deepcopy(dict(base))
    labels = dict(sorted({**base["metadata"]["labels"], ROLLOUT_LABEL: rollout}.items()))
    service["metadata"] = _owned_metadata(base["metadata"],
                                          preview_service_name(base["metadata"]["name"]),
                                          rollout, uid, labels)
    service["spec"]["selector"] = _with_color(base["spec"]["selector"], color)
    return service


def _mark(manifest: dict[str, Any], rollout: str) -> dict[str, Any]:
    """Label a CommerceService child the rollout writes, so both operators can tell."""
    manifest["metadata"]["labels"] = dict(sorted(
        {**manifest["metadata"]["labels"], ROLLOUT_LABEL: rollout}.items()))
    return manifest


def active_service(base: Mapping[str, Any], rollout: str, active: Color) -> dict[str, Any]:
    """The CommerceService's Service, selecting only the active colour's Pods."""
    service = _mark(copy.deepcopy(dict(base)), rollout)
    service["spec"]["selector"] = _with_color(base["spec"]["selector"], active)
    return service


def weighted_virtual_service(base: Mapping[str, Any], rollout: str,
                             active: Color) -> dict[str, Any]:
    """Every route of the CommerceService's VirtualService split over the two subsets:
    100 to the active colour, 0 to the other (kept, so a flip changes only numbers)."""
    virtual_service = _mark(copy.deepcopy(dict(base)), rollout)
    for http in virtual_service["spec"]["http"]:
        destination = http["route"][0]["destination"]
        http["route"] = [
            {"destination": {**destination, "subset": color.value},
             "weight": 100 if color is active else 0}
            for color in Color
        ]
    return virtual_service


def colored_destination_rule(base: Mapping[str, Any], rollout: str) -> dict[str, Any]:
    """The CommerceService's DestinationRule with a subset per colour; the traffic policy
    (and so a CircuitBreakerPolicy's limits) sits at the top and applies to both."""
    rule = _mark(copy.deepcopy(dict(base)), rollout)
    rule["spec"]["subsets"] = [{"name": color.value, "labels": {COLOR_LABEL: color.value}}
                               for color in Color]
    return rule


def _by_kind(children: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(child for child in children if child["kind"] == kind)


def render(rollout: str, uid: str, base: Sequence[dict[str, Any]],
           plan: ColorPlan) -> RolloutRender:
    """What the rollout applies for ``plan``, from ``base``, the CommerceService's own
    children as its operator renders them (with the breaker policy governing it merged in):
    a Deployment per colour that has an image, the preview Service (selecting the colour
    without traffic) and, once the rollout carries traffic, the CommerceService's Service,
    DestinationRule and VirtualService pointed at ``plan.traffic``."""
    deployments = [
        color_deployment(_by_kind(base, "Deployment"), rollout, uid, color, image,
                         plan.replicas[color])
        for color in Color if (image := plan.images.get(color)) is not None
    ]
    preview = preview_service(_by_kind(base, "Service"), rollout, uid, plan.preview)
    traffic: list[dict[str, Any]] = []
    if plan.traffic is not None:
        traffic = [colored_destination_rule(_by_kind(base, "DestinationRule"), rollout),
                   weighted_virtual_service(_by_kind(base, "VirtualService"), rollout,
                                            plan.traffic),
                   active_service(_by_kind(base, "Service"), rollout, plan.traffic)]
    return RolloutRender(deployments, preview, traffic)
