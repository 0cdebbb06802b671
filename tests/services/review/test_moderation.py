"""The automatic screen and the moderation transitions, as pure functions."""

from __future__ import annotations

import pytest

from services.review.moderation import ReviewStatus, may_moderate, screen

BANNED = ["scam"]


@pytest.mark.parametrize(("text", "status", "flags"), [
    ("Works as described", ReviewStatus.APPROVED, ()),
    ("A SCAM.", ReviewStatus.REJECTED, ("banned_words",)),
    ("scammer is not the banned word", ReviewStatus.APPROVED, ()),
    ("see http://x.example", ReviewStatus.PENDING, ("link",)),
    ("see www.shop.example", ReviewStatus.PENDING, ("link",)),
    ("buy at cheap-deals.com", ReviewStatus.PENDING, ("link",)),
    ("a scam, see www.x.example", ReviewStatus.REJECTED, ("banned_words",)),
])
def test_screen(text: str, status: ReviewStatus, flags: tuple[str, ...]) -> None:
    verdict = screen(["", text], BANNED)
    assert (verdict.status, verdict.flags) == (status, flags)


def test_without_auto_approval_clean_reviews_wait_for_a_moderator() -> None:
    assert screen(["fine"], BANNED, auto_approve=False).status is ReviewStatus.PENDING


@pytest.mark.parametrize(("current", "decision", "allowed"), [
    (ReviewStatus.PENDING, ReviewStatus.APPROVED, True),
    (ReviewStatus.PENDING, ReviewStatus.REJECTED, True),
    (ReviewStatus.APPROVED, ReviewStatus.REJECTED, True),
    (ReviewStatus.REJECTED, ReviewStatus.APPROVED, True),
    (ReviewStatus.APPROVED, ReviewStatus.APPROVED, False),
    (ReviewStatus.APPROVED, ReviewStatus.PENDING, False),
    (ReviewStatus.PENDING, ReviewStatus.PENDING, False),
])
def test_moderation_transitions(current: ReviewStatus, decision: ReviewStatus,
                                allowed: bool) -> None:
    assert may_moderate(current, decision) is allowed
