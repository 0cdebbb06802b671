"""What a custom resource kind is, beyond its schema: names, short names, printer columns.

Each kind's ``spec.py`` declares one :class:`CustomResource`; the CRD generator and the Kopf
handlers read the same object, so the plural a handler watches is the plural the CRD serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from operators.meta import API_GROUP, API_VERSION, API_VERSION_NAME

READY_STATUS_PATH = '.status.conditions[?(@.type=="Ready")].status'
DEGRADED_STATUS_PATH = '.status.conditions[?(@.type=="Degraded")].status'


@dataclass(frozen=True)
class PrinterColumn:
    """A column of ``kubectl get``; ``priority=1`` shows it only with ``-o wide``."""

    name: str
    json_path: str
    type: str
    description: str
    priority: int = 0


@dataclass(frozen=True)
class CustomResource:
    """One namespaced kind of the ``kommerce.io`` API group."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    description: str
    printer_columns: tuple[PrinterColumn, ...]

    group: str = API_GROUP
    version: str = API_VERSION_NAME

    @property
    def api_version(self) -> str:
        """``kommerce.io/v1alpha1``."""
        return API_VERSION

    @property
    def crd_name(self) -> str:
        """The CustomResourceDefinition's name, ``<plural>.<group>``."""
        return f"{self.plural}.{self.group}"


def ready_column() -> PrinterColumn:
    """The ``Ready`` condition's status, the column every kind shows."""
    return PrinterColumn("Ready", READY_STATUS_PATH, "string",
                         "Whether the resource is Ready (its Ready condition).")


def age_column() -> PrinterColumn:
    """``kubectl``'s usual Age column."""
    return PrinterColumn("Age", ".metadata.creationTimestamp", "date",
                         "Time since the resource was created.")


def degraded_column() -> PrinterColumn:
    """The ``Degraded`` condition's status, for kinds that can be Ready and Degraded at once
    (a service whose Pods run while one of its routes is claimed by another)."""
    return PrinterColumn("Degraded", DEGRADED_STATUS_PATH, "string",
                         "Whether something needs attention (its Degraded condition).")


def reason_column() -> PrinterColumn:
    """``status.reason``: the Degraded reason while Degraded, else the Ready reason."""
    return PrinterColumn("Reason", ".status.reason", "string",
                         "Why: the Degraded condition's reason while Degraded, otherwise "
                         "the Ready condition's.")


def message_column() -> PrinterColumn:
    """``status.message``, the words that go with the reason; last, being the longest."""
    return PrinterColumn("Message", ".status.message", "string",
                         "What the reason means and what to do.")


def status_columns(*, with_degraded: bool = True) -> tuple[PrinterColumn, ...]:
    """Ready, Degraded, Reason, Age and Message: the same trouble columns on every kind."""
    return (ready_column(), *((degraded_column(),) if with_degraded else ()), reason_column(),
            age_column(), message_column())
