"""``kommerce serve [COMPONENT]``: serve one component, as ``python -m services.<name>`` would.

It is the image's default command. A CommerceService without ``args`` gets this command in its
Pods, and the operator tells it what to serve through ``KOMMERCE_COMPONENT``, so one image
runs every component without a per-component entry point. The components are the same table
``kommerce up`` starts from (:mod:`kommerce.platform.services`), so a service that runs
locally runs in the cluster with the same module and arguments (search's ``serve``).

The module runs in this process (``runpy``) rather than in a child: the container's PID 1
is then the server itself, and SIGTERM reaches uvicorn, which drains in-flight requests.
"""

from __future__ import annotations

import runpy
import sys

import typer

from kommerce.platform.services import GATEWAY, SERVICES, ServiceSpec

#: The variable the CommerceService operator sets in every Pod it renders.
COMPONENT_VARIABLE = "KOMMERCE_COMPONENT"

#: Exit status for a component this image cannot serve: a usage error, as click uses.
UNKNOWN_COMPONENT_EXIT = 2

COMPONENTS: dict[str, ServiceSpec] = {spec.name: spec for spec in (*SERVICES, GATEWAY)}


class UnknownComponentError(LookupError):
    """No component of that name, or this image lacks its package; the message says which
    and lists what it can serve."""


def resolve_component(name: str | None) -> ServiceSpec:
    """The component to serve, or :class:`UnknownComponentError` with an actionable message."""
    known = ", ".join(sorted(COMPONENTS))
    if not name:
        raise UnknownComponentError(
            f"no component given: pass one (kommerce serve product) or set "
            f"{COMPONENT_VARIABLE}; the components are {known}")
    spec = COMPONENTS.get(name.strip().lower())
    if spec is None:
        raise UnknownComponentError(f"no component {name!r}; the components are {known}")
    if (missing := spec.missing()) is not None:
        raise UnknownComponentError(f"component {spec.name!r} cannot be served here: {missing}")
    return spec


def run_component(spec: ServiceSpec) -> None:
    """Run the component's ``__main__`` in this process with its arguments in ``sys.argv``,
    exactly as ``python -m services.<name> <args>`` would; returns when the server stops."""
    sys.argv = [spec.module, *spec.args]
    runpy.run_module(spec.module, run_name="__main__", alter_sys=True)


def serve(
    component: str | None = typer.Argument(
        None, envvar=COMPONENT_VARIABLE, show_envvar=True,
        help=f"The component to serve: {', '.join(sorted(COMPONENTS))}."),
) -> None:
    """Serve one component with settings from the environment (the image's default command)."""
    try:
        spec = resolve_component(component)
    except UnknownComponentError as exc:
        typer.echo(f"kommerce serve: {exc}", err=True)
        raise typer.Exit(UNKNOWN_COMPONENT_EXIT) from None
    run_component(spec)
