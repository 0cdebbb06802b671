"""What the user service publishes (topic ``user.events``, keyed by user id).

* ``user.registered`` — a new account (welcome mail, analytics);
* ``user.updated`` — profile, preferences or roles changed; ``changed`` names which, and
  ``version`` grows with every change so a consumer can ignore one that arrives late.

Both carry the user's current snapshot, so a consumer never has to call back. Addresses and
password changes are not published: personal data that is not sent cannot leak.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from kommerce.contracts.events.base import EventPayload, topic_of

USER_TOPIC = topic_of("user")
USER_REGISTERED = "user.registered"
USER_UPDATED = "user.updated"


class UserSnapshot(EventPayload):
    DESCRIBES: ClassVar[str] = "a user snapshot"

    user_id: str = Field(min_length=1)
    email: str
    full_name: str | None = None
    phone: str | None = None
    roles: list[str] = Field(default_factory=list)
    preferences: dict[str, Any] = Field(default_factory=dict)
    version: int


class UserRegistered(UserSnapshot):
    DESCRIBES: ClassVar[str] = "a registration"

    registered_at: str = Field(description="ISO 8601, as the publisher wrote it.")


class UserUpdated(UserSnapshot):
    DESCRIBES: ClassVar[str] = "a user update"

    changed: list[str] = Field(description="Which parts changed (sorted).")
