"""What every event payload shares: parsing with a clear refusal, writing, its version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError


def topic_of(service: str) -> str:
    """The topic a service publishes on: ``<service name>.events``."""
    return f"{service}.events"


class InvalidPayload(ValueError):
    """An event's payload is not what its contract says; it can never be applied, so a
    consumer dead-letters it at once."""


def summary(exc: ValidationError, *, limit: int = 5) -> str:
    """The first problems of ``exc`` as one line: ``field.path: message; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in error['loc']) or '<payload>'}: {error['msg']}"
                     for error in exc.errors()[:limit])


class EventPayload(BaseModel):
    """One event's payload. Unknown fields are ignored (a publisher may add one before its
    consumers read it); fields are declared in the order the publisher writes them, so
    :meth:`wire` gives the same bytes the event always had."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    #: What the payload is, for messages ("an order status change").
    DESCRIBES: ClassVar[str] = "an event payload"
    #: The newest payload shape this model reads and writes (the envelope's
    #: ``schema_version``).
    SCHEMA_VERSION: ClassVar[int] = 1

    @classmethod
    def parse(cls, payload: Mapping[str, Any], *, schema_version: int = 1) -> Self:
        """The payload of an incoming event, or :class:`InvalidPayload` saying what is
        wrong with it."""
        if schema_version > cls.SCHEMA_VERSION:
            raise InvalidPayload(f"not {cls.DESCRIBES}: schema version {schema_version} is "
                                 f"newer than the {cls.SCHEMA_VERSION} this consumer reads")
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise InvalidPayload(f"not {cls.DESCRIBES}: {summary(exc)}") from exc

    @classmethod
    def checked(cls, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` itself, once it is known to fit (a publisher that already has the
        document, such as a product's JSON, sends it as it is)."""
        cls.parse(payload)
        return payload

    def wire(self) -> dict[str, Any]:
        """The payload as published."""
        return self.model_dump(mode="json")
