"""The release a BlueGreenRollout declares on the CommerceService whose traffic it carries.

The rollout's operator writes it as two annotations on the CommerceService; the
CommerceService's operator reads them to hand its traffic objects over and to follow the
active colour's Deployment in its status; a platform engineer sees them with ``kubectl``.
The colour names are also the Istio subset names and the route table's ``activeColor``.
One definition, so the writer and the readers cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

# Not under ``kommerce.io/``: Kopf keeps its own bookkeeping under that prefix and ignores
# it when deciding whether an object changed, and these must wake the CommerceService up.
RELEASED_BY_ANNOTATION = "bluegreen.kommerce.io/rollout"
ACTIVE_COLOR_ANNOTATION = "bluegreen.kommerce.io/active-color"

#: A Kubernetes object name (RFC 1123 subdomain), as the rollout's name must be.
_OBJECT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class Color(StrEnum):
    """One of the two Deployments; also the Istio subset name and the ``kommerce.io/color``
    label value."""

    BLUE = "blue"
    GREEN = "green"

    @property
    def other(self) -> Color:
        """The colour that is not this one."""
        return Color.GREEN if self is Color.BLUE else Color.BLUE


class Release(BaseModel):
    """A CommerceService's traffic is carried by ``rollout``'s ``active`` colour."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rollout: str = Field(min_length=1, max_length=253, pattern=_OBJECT_NAME)
    active: Color

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> Release | None:
        """The release ``annotations`` declare, or None when they declare none or a
        malformed one (a hand edit): the service then renders as if it were not released,
        and the rollout, level-triggered, writes its release again."""
        annotations = annotations or {}
        rollout = annotations.get(RELEASED_BY_ANNOTATION)
        color = annotations.get(ACTIVE_COLOR_ANNOTATION)
        if rollout is None or color is None:
            return None
        try:
            return cls(rollout=rollout, active=Color(color))
        except ValueError:  # pydantic's ValidationError is one too
            return None

    def annotations(self) -> dict[str, str]:
        """The annotations that declare this release."""
        return {RELEASED_BY_ANNOTATION: self.rollout, ACTIVE_COLOR_ANNOTATION: self.active.value}


def release_patch(release: Release | None) -> dict[str, str | None]:
    """The annotation patch that declares ``release``, or removes any release (None values
    delete an annotation in a merge patch)."""
    if release is None:
        return {RELEASED_BY_ANNOTATION: None, ACTIVE_COLOR_ANNOTATION: None}
    return {**release.annotations()}
