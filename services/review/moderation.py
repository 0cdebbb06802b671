"""The automatic screen every review's text passes on the way in: pure, no I/O.

Banned words get a review rejected outright (no moderator needs to read abuse); links are
not always spam, so they send the review to the moderation queue instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

_LINK = re.compile(r"(https?://|www\.|\b[a-z0-9-]+\.(com|net|org|io|ru|cn|biz|info|xyz)\b)",
                   re.IGNORECASE)
_WORD = re.compile(r"\w+", re.UNICODE)


class ReviewStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Screening:
    status: ReviewStatus
    flags: tuple[str, ...]
    reason: str | None


def screen(texts: Iterable[str], banned_words: Iterable[str],
           auto_approve: bool = True) -> Screening:
    joined = "\n".join(texts)
    words = {w.lower() for w in _WORD.findall(joined)}
    banned = sorted(words & {b.lower() for b in banned_words})
    if banned:
        return Screening(ReviewStatus.REJECTED, ("banned_words",),
                         "contains words that are not allowed")
    if _LINK.search(joined):
        return Screening(ReviewStatus.PENDING, ("link",), "contains a link; awaiting review")
    return Screening(ReviewStatus.APPROVED if auto_approve else ReviewStatus.PENDING, (), None)


def may_moderate(current: ReviewStatus, decision: ReviewStatus) -> bool:
    """Moderators approve or reject; a decision can be reversed, but nothing goes back to
    pending and deciding what is already decided is refused (it is usually a double click
    on stale data)."""
    return decision is not ReviewStatus.PENDING and decision is not current
