"""The release annotations: what the rollout's operator writes on a CommerceService is what
the CommerceService's operator reads back, and a hand-edited one is read as no release."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kommerce.contracts.release import (
    ACTIVE_COLOR_ANNOTATION,
    RELEASED_BY_ANNOTATION,
    Color,
    Release,
    release_patch,
)

NAMES = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?", fullmatch=True)


@given(rollout=NAMES, active=st.sampled_from(Color))
def test_a_release_read_back_from_its_annotations_is_the_release_written(
        rollout: str, active: Color) -> None:
    release = Release(rollout=rollout, active=active)
    annotations = {"unrelated": "x", **release.annotations()}
    assert Release.from_annotations(annotations) == release


@pytest.mark.parametrize("annotations", [
    None,
    {},
    {RELEASED_BY_ANNOTATION: "product-rollout"},
    {ACTIVE_COLOR_ANNOTATION: "blue"},
    {RELEASED_BY_ANNOTATION: "product-rollout", ACTIVE_COLOR_ANNOTATION: "purple"},
    {RELEASED_BY_ANNOTATION: "", ACTIVE_COLOR_ANNOTATION: "green"},
    {RELEASED_BY_ANNOTATION: "Not A Name", ACTIVE_COLOR_ANNOTATION: "green"},
    {RELEASED_BY_ANNOTATION: "x" * 254, ACTIVE_COLOR_ANNOTATION: "green"},
])
def test_missing_or_malformed_annotations_declare_no_release(
        annotations: dict[str, str] | None) -> None:
    assert Release.from_annotations(annotations) is None


def test_the_patch_for_no_release_removes_both_annotations() -> None:
    assert release_patch(None) == {RELEASED_BY_ANNOTATION: None, ACTIVE_COLOR_ANNOTATION: None}
    assert release_patch(Release(rollout="r", active=Color.GREEN)) == {
        RELEASED_BY_ANNOTATION: "r", ACTIVE_COLOR_ANNOTATION: "green"}


def test_a_release_is_immutable_and_refuses_unknown_fields() -> None:
    release = Release(rollout="r", active=Color.BLUE)
    with pytest.raises(ValueError, match="frozen"):
        release.rollout = "other"  # type: ignore[misc]  # the assignment frozen refuses
    with pytest.raises(ValueError, match="Extra inputs"):
        Release.model_validate({"rollout": "r", "active": "blue", "weight": 1})
