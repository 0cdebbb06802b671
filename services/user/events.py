"""What the user service publishes (on ``user.events``, keyed by user id); it consumes
nothing. The names and payloads are the contract in :mod:`kommerce.contracts.events.user`:
``user.registered`` and ``user.updated``, each with the user's current snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kommerce.contracts.events.user import (
    USER_REGISTERED,
    USER_UPDATED,
    UserRegistered,
    UserUpdated,
)
from services.core.events.envelope import EventEnvelope
from services.user.models import User
from services.user.schemas import Preferences


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
                             payload=UserRegistered(
                                 **snapshot(user),
                                 registered_at=user.created_at.isoformat()).wire())


def user_updated(user: User, changed: Iterable[str], *, source: str) -> EventEnvelope:
    return EventEnvelope.new(USER_UPDATED, source=source, key=str(user.id),
                             payload=UserUpdated(**snapshot(user),
                                                 changed=sorted(set(changed))).wire())
