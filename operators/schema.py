"""The base every custom-resource model builds on, and the field types they share.

The pydantic models are the one source of truth for a kind: ``operators.crdgen`` turns them
into the CRD's OpenAPI schema, and the operator validates the same spec with them before it
renders anything. Cross-field rules are declared once as :class:`CelRule` — the CEL text
goes into ``x-kubernetes-validations`` so the apiserver rejects bad input, and the Python
``check`` mirrors it so the operator (and the tests) reject exactly the same input with the
same message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from operators.units import DURATION_PATTERN, QUANTITY_PATTERN, is_quantity

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Secret and ConfigMap keys: Kubernetes' own rule for data keys.
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule, written once for the apiserver (CEL) and once for Python.

    ``message`` is shared by both, so a user sees the same words from ``kubectl apply``
    and from the operator's ``Degraded`` condition. ``field_path`` (relative, e.g.
    ``.routes``) points the apiserver's error at the offending field.
    """

    rule: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None
    reason: str | None = None
    # A CEL string expression for a message naming the offending values, and its Python
    # mirror; ``message`` stays the apiserver's fallback should the expression fail.
    message_expression: str | None = None
    describe: Callable[[Any], str] | None = None

    def failure(self, value: Any) -> str:
        """The message for ``value`` failing this rule, as the apiserver would word it."""
        return self.describe(value) if self.describe is not None else self.message

    def to_schema(self) -> dict[str, str]:
        """The ``x-kubernetes-validations`` entry for this rule."""
        entry = {"rule": self.rule, "message": self.message}
        if self.message_expression is not None:
            entry["messageExpression"] = self.message_expression
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        if self.reason is not None:
            entry["reason"] = self.reason
        return entry


def _attach_cel_rules(schema: dict[str, Any], cls: type) -> None:
    rules: tuple[CelRule, ...] = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]


class KubeModel(BaseModel):
    """Base of every spec and status model: camelCase on the wire, unknown fields refused.

    Frozen because a parsed spec is a value: render functions must not be able to change
    what they were given.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        json_schema_extra=_attach_cel_rules,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        failures = [rule.failure(self) for rule in type(self).cel_rules if not rule.check(self)]
        if failures:
            raise ValueError("; ".join(failures))
        return self

    def wire(self) -> dict[str, Any]:
        """The model as it appears in a manifest: camelCase keys, enums as strings."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def nested(model: type[BaseModel], description: str) -> Any:
    """A sub-object that is optional as a whole but whose fields all have defaults.

    The CRD's default is the whole default object, so the apiserver fills in the block when
    the user leaves it out (pydantic does the same with ``default_factory``). ``{}`` would
    not do: the apiserver checks a default against the CEL rules before nested defaulting.
    """
    default = model().model_dump(mode="json", by_alias=True, exclude_none=True)
    return Field(default_factory=model, description=description,
                 json_schema_extra={"default": default})


def _quantity_to_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value  # let the str check below refuse it
    if isinstance(value, int | float):
        return str(value)
    return value


def _check_quantity(value: str) -> str:
    if not is_quantity(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 250m, 1, 512Mi or 1Gi")
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_text),
    AfterValidator(_check_quantity),
    WithJsonSchema({
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
    }),
]
"""A resource quantity (``250m``, ``512Mi``); an integer is accepted like ``kubectl`` does."""

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]
"""A Go-style duration such as ``3s`` or ``1m30s``, the format Istio and CEL understand."""

DnsLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
"""A DNS-1123 label: what Services, shard names and most Kubernetes names must be."""

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
"""The name of a Secret or ConfigMap (a DNS-1123 subdomain)."""

ConfigKey = Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIG_KEY_PATTERN)]
"""A key inside a Secret's or ConfigMap's data."""


class InvalidSpec(ValueError):
    """A custom resource the operator cannot act on; the message names each bad field.

    Handlers turn it into ``kopf.PermanentError`` and a ``Degraded`` condition: retrying
    cannot fix a spec, only the user can.
    """


ModelT = TypeVar("ModelT", bound=BaseModel)


def format_validation_error(error: ValidationError, root: str = "spec") -> str:
    """One line per problem, each starting with the field path a user would edit."""
    lines = []
    for problem in error.errors():
        path = root
        for part in problem["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "\n".join(lines)


def parse_spec(model: type[ModelT], raw: Mapping[str, Any], *, root: str = "spec") -> ModelT:
    """Validate a CR's spec (as Kopf hands it over) into its model, or raise InvalidSpec."""
    try:
        return model.model_validate(dict(raw))
    except ValidationError as error:
        raise InvalidSpec(format_validation_error(error, root)) from None
