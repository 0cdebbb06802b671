"""Typed slots on ``app.state``: what a service's lifespan builds and its routes use.

Starlette's ``app.state`` is an untyped bag, so every read of it was an ``Any`` cast back
by hand. An :class:`AppState` names one attribute and its type once; the lifespan
puts the value there, and routes read it either as a FastAPI dependency (the slot itself is
one, and an async one: FastAPI runs a plain ``def`` dependency in a worker thread) or by
``of(request)`` inside a handler. The attribute keeps its name on ``app.state``, so tests
that reach for ``app.state.payments`` still find it.
"""

from __future__ import annotations

from typing import Generic, TypeVar, cast

from fastapi import FastAPI, Request

from services.core.settings import ServiceSettings

T = TypeVar("T")
D = TypeVar("D")


class AppState(Generic[T]):
    """``app.state.<name>``, of type ``T``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def put(self, app: FastAPI, value: T) -> T:
        setattr(app.state, self.name, value)
        return value

    def of_app(self, app: FastAPI) -> T:
        return cast(T, getattr(app.state, self.name))

    def of(self, request: Request) -> T:
        """The value on the request's app (set by the lifespan before any request)."""
        return cast(T, getattr(request.app.state, self.name))

    def get(self, request: Request, default: D) -> T | D:
        """The value on the request's app, or ``default`` when none was put there."""
        return cast("T | D", getattr(request.app.state, self.name, default))

    async def __call__(self, request: Request) -> T:
        return self.of(request)

    def __repr__(self) -> str:
        return f"AppState({self.name!r})"


#: The service's settings, put by ``create_service_app`` (a service that reads fields of
#: its own subclass names its own slot on the same attribute).
SETTINGS = AppState[ServiceSettings]("settings")
