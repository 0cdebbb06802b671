"""What the user service publishes (on ``user.events``, keyed by user id); it consumes
nothing.

``user.registered``: a new account (welcome mail, analytics).
``user.updated``: profile, preferences or roles changed; ``changed`` names which, and
``version`` grows with every change so a consumer can ignore one that arrives late.
Both carry the user's current snapshot, so a consumer never has to call back. Addresses and
password changes are not published: nobody downstream needs them, and personal data that is
not sent cannot leak.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.core.events.envelope import EventEnvelope
from services.user.models import User
from services.user.schemas import Preferences

USER_REGISTERED = "user.registered"
USER_UPDATED = "user.updated"


def snapshot(user: User) -> dict[str, Any]:
    return {
        "user_id": str(user.id),
        "email": user.email,
        "full_name": user.full_name,
        "phone": user.phone,
        "roles": sorted(user.roles),
        "preferences": Preferences.from_stored(user.preferences).model_dump(),
        "version": user.version,
    }


def user_registered(user: User, *, source: str) -> EventEnvelope:
    return EventEnvelope.new(USER_REGISTERED, source=source, key=str(user.id),
                             payload={**snapshot(user),
                                      "registered_at": user.created_at.isoformat()})


def user_updated(user: User, changed: Iterable[str], *, source: str) -> EventEnvelope:
    return EventEnvelope.new(USER_UPDATED, source=source, key=str(user.id),
                             payload={**snapshot(user), "changed": sorted(set(changed))})
