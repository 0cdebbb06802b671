"""The CommerceService's side of a blue-green release; pure, no I/O.

A CommerceService whose traffic a BlueGreenRollout has taken over (see
``operators.bluegreen.render`` for the ownership split) still renders its children, then
passes them through :func:`hand_over`: what remains is what it keeps applying. Its status
then follows the active colour's Deployment, and a ``Released`` condition says who runs its
Pods. Kept here, beside the rollout, so the CommerceService handlers need only a few lines.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kommerce.contracts.release import Release
from operators.bluegreen.render import (
    ROLLOUT_LABEL,
    TRAFFIC_KINDS,
    color_deployment_name,
)
from operators.conditions import ConditionStatus, ConditionUpdate, set_conditions

RELEASED_CONDITION = "Released"
HANDED_OVER_KINDS = frozenset(kind for _, kind in TRAFFIC_KINDS)
"""Kinds of CommerceService children the rollout writes while it carries traffic: the
CommerceService neither applies, prunes nor repairs them then."""


def hand_over(children: Sequence[dict[str, Any]], rollout: str) -> list[dict[str, Any]]:
    """The CommerceService's children while ``rollout`` carries its traffic: the traffic
    objects left to the rollout, its own Deployment kept (so nothing is pruned and the HPA
    keeps a target) at 0 replicas and labelled with the rollout's name."""
    kept: list[dict[str, Any]] = []
    for child in children:
        if child["kind"] in HANDED_OVER_KINDS:
            continue
        if child["kind"] == "Deployment":
            child = copy.deepcopy(child)
            child["metadata"]["labels"] = dict(sorted(
                {**child["metadata"]["labels"], ROLLOUT_LABEL: rollout}.items()))
            rest = {k: v for k, v in child["spec"].items() if k != "replicas"}
            child["spec"] = {"replicas": 0, **rest}
        kept.append(child)
    return kept


def released_by(labels: Mapping[str, str] | None) -> str | None:
    """The rollout a CommerceService child was last written under (its label), if any:
    drift repair must then compare the child with :func:`hand_over`'s output."""
    return (labels or {}).get(ROLLOUT_LABEL) or None


def status_deployment_name(service: str, release: Release | None) -> str:
    """The Deployment whose Pods serve the service: its own, or the active colour's."""
    return service if release is None else color_deployment_name(service, release.active)


def with_release_condition(conditions: Sequence[Mapping[str, Any]] | None,
                           release: Release | None, *, service: str,
                           observed_generation: int, now: datetime) -> list[dict[str, Any]]:
    """``conditions`` with ``Released`` set while a rollout carries traffic, and without it
    otherwise (so a service never released never shows one)."""
    if release is None:
        return [dict(c) for c in conditions or () if c.get("type") != RELEASED_CONDITION]
    message = (f"BlueGreenRollout {release.rollout} runs the Pods and routes the traffic: "
               f"{release.active.value} is active (Deployment "
               f"{color_deployment_name(service, release.active)}); Deployment {service} is "
               "kept at 0 replicas and its HorizontalPodAutoscaler is idle until the rollout "
               "is deleted")
    update = ConditionUpdate(RELEASED_CONDITION, ConditionStatus.TRUE, "BlueGreenRollout",
                             message)
    return set_conditions(conditions, [update], observed_generation=observed_generation,
                          now=now)
