"""Status conditions in the Kubernetes convention (``metav1.Condition``), as pure functions.

Why pure: the handlers compute the whole new condition list from the old one and what they
observed, then write it once. ``lastTransitionTime`` changes only when a condition's status
changes, so a reconcile that observes nothing new produces an identical status and the
apply layer writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from operators.schema import KubeModel


class ConditionType(StrEnum):
    """The condition types every kind reports (see ``kubectl explain <kind>.status``)."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


class ConditionStatus(StrEnum):
    """Whether a condition holds: ``Unknown`` until the operator has looked."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
SUMMARY_LENGTH = 400
_REASON = re.compile(REASON_PATTERN)
_ORDER = {kind.value: index for index, kind in enumerate(ConditionType)}


class Condition(KubeModel):
    """One aspect of the resource's state, with the reason it is so."""

    type: str = Field(max_length=316, pattern=r"^([a-zA-Z0-9.-]+/)?[A-Za-z]([A-Za-z0-9_]*)?$",
                      description="Condition type: Ready, Progressing or Degraded.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, pattern=REASON_PATTERN,
                        description="A CamelCase word saying why, for machines and for "
                                    "filtering (e.g. SecretNotFound).")
    message: str = Field(max_length=32768,
                         description="What is wrong or what is happening, for people.")
    last_transition_time: datetime = Field(
        description="When the status last changed (not when it was last checked).")
    observed_generation: int | None = Field(
        default=None, ge=0,
        description="The metadata.generation this condition was computed from; older than "
                    "metadata.generation means the operator has not caught up yet.")


class ResourceStatus(KubeModel):
    """What every kind reports: the generation the operator last acted on, conditions, and
    the one reason and message ``kubectl get`` shows (see :func:`summary`)."""

    observed_generation: int | None = Field(
        default=None, ge=0,
        description="The metadata.generation the operator last reconciled.")
    reason: str | None = Field(
        default=None, max_length=128,
        description="Why the resource is as it is, as one CamelCase word: the Degraded "
                    "condition's reason while Degraded, otherwise the Ready condition's.")
    message: str | None = Field(
        default=None, max_length=SUMMARY_LENGTH + 3,
        description="The message that goes with reason (cut short; the conditions hold it "
                    "whole).")
    kopf: dict[str, Any] | None = Field(
        default=None,
        description="The operator framework's bookkeeping (handler progress, the last "
                    "handled spec); not for people.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    conditions: list[Condition] | None = Field(
        default=None, max_length=8,
        description="Ready, Progressing and Degraded, in the Kubernetes convention.",
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["type"]})


@dataclass(frozen=True)
class ConditionUpdate:
    """What a reconcile concluded about one condition type."""

    type: str
    status: ConditionStatus
    reason: str
    message: str

    def __post_init__(self) -> None:
        if not _REASON.match(self.reason):
            raise ValueError(
                f"condition reason {self.reason!r} must be CamelCase ({REASON_PATTERN})")


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes timestamps."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_condition(conditions: Sequence[Mapping[str, Any]] | None,
                   type_: str) -> Mapping[str, Any] | None:
    """The condition of that type, or None."""
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def is_condition_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    """True only when the condition exists with status ``True``."""
    condition = find_condition(conditions, type_)
    return condition is not None and condition.get("status") == ConditionStatus.TRUE


def set_conditions(existing: Sequence[Mapping[str, Any]] | None,
                   updates: Iterable[ConditionUpdate], *, observed_generation: int,
                   now: datetime) -> list[dict[str, Any]]:
    """A new condition list with ``updates`` applied; ``existing`` is left untouched.

    A condition whose status did not change keeps its ``lastTransitionTime``; reason,
    message and ``observedGeneration`` are always the latest. Conditions not mentioned in
    ``updates`` are kept as they were. The list is ordered Ready, Progressing, Degraded,
    then any other type alphabetically, so the output is the same however it was built.
    """
    by_type: dict[str, dict[str, Any]] = {
        str(condition["type"]): dict(condition) for condition in existing or ()}
    latest = {update.type: update for update in updates}  # one verdict per type: the last
    for update in latest.values():
        previous = by_type.get(update.type)
        changed = previous is None or previous.get("status") != update.status.value
        by_type[update.type] = {
            "type": update.type,
            "status": update.status.value,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": format_time(now) if previous is None or changed
            else previous.get("lastTransitionTime") or format_time(now),
            "observedGeneration": observed_generation,
        }
    return sorted(by_type.values(), key=lambda c: (_ORDER.get(c["type"], len(_ORDER)), c["type"]))


def ready(reason: str, message: str) -> ConditionUpdate:
    """``Ready=True``."""
    return ConditionUpdate(ConditionType.READY, ConditionStatus.TRUE, reason, message)


def not_ready(reason: str, message: str) -> ConditionUpdate:
    """``Ready=False``."""
    return ConditionUpdate(ConditionType.READY, ConditionStatus.FALSE, reason, message)


def progressing(active: bool, reason: str, message: str) -> ConditionUpdate:
    """``Progressing`` True while the operator is moving towards the spec."""
    status = ConditionStatus.TRUE if active else ConditionStatus.FALSE
    return ConditionUpdate(ConditionType.PROGRESSING, status, reason, message)


def degraded(active: bool, reason: str, message: str) -> ConditionUpdate:
    """``Degraded`` True while something needs a person's attention."""
    status = ConditionStatus.TRUE if active else ConditionStatus.FALSE
    return ConditionUpdate(ConditionType.DEGRADED, status, reason, message)


def summary(conditions: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    """``status.reason`` and ``status.message`` for ``kubectl get``'s columns: what needs
    attention first (Degraded), otherwise why the resource is or is not Ready. One pair of
    fields, because a printer column cannot choose between two conditions."""
    chosen = None
    degraded_now = find_condition(conditions, ConditionType.DEGRADED)
    if degraded_now is not None and degraded_now.get("status") == ConditionStatus.TRUE:
        chosen = degraded_now
    else:
        chosen = find_condition(conditions, ConditionType.READY)
    if chosen is None:
        return {}
    message = str(chosen.get("message") or "")
    if len(message) > SUMMARY_LENGTH:
        message = message[:SUMMARY_LENGTH].rstrip() + "..."
    return {"reason": str(chosen.get("reason") or ""), "message": message}
