"""Parsing of the two string-encoded units that custom resources carry.

Go-style durations (``3s``, ``1m30s``, ``250ms``) and Kubernetes quantities (``250m``,
``512Mi``) are compared by CEL rules in the CRDs (``duration(a) <= duration(b)``,
``quantity(a).compareTo(quantity(b))``). The pydantic validators mirror those rules, so they
need the same arithmetic: a spec the apiserver accepts must also parse here, and vice versa.
"""

from __future__ import annotations

import re
from decimal import Decimal

# Go's time.ParseDuration grammar restricted to the units a person would write in a CR
# (Istio's and the apiserver's CEL ``duration()`` accept exactly these).
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_WHOLE = re.compile(DURATION_PATTERN)
_SECONDS_PER_UNIT = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}

# Kubernetes' resource.Quantity grammar without a sign: resources are never negative.
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_WHOLE = re.compile(QUANTITY_PATTERN)
_QUANTITY_SPLIT = re.compile(r"^([0-9.]+)(.*)$")
_BINARY_SUFFIXES = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12,
                     "P": 15, "E": 18}


def parse_duration(text: str) -> Decimal:
    """Seconds in a Go-style duration such as ``1m30s``; ValueError if it is not one."""
    if not _DURATION_WHOLE.match(text):
        raise ValueError(f"{text!r} is not a duration such as 250ms, 3s, 1m30s or 2h")
    return sum(
        (Decimal(number) * _SECONDS_PER_UNIT[unit]
         for number, unit in _DURATION_PART.findall(text)),
        Decimal(0),
    )


def is_duration(text: str) -> bool:
    """True when ``text`` is a Go-style duration that ``parse_duration`` accepts."""
    return bool(_DURATION_WHOLE.match(text))


def parse_quantity(value: str | int) -> Decimal:
    """The numeric value of a Kubernetes quantity (``250m`` -> 0.25, ``1Ki`` -> 1024)."""
    text = str(value)
    if not _QUANTITY_WHOLE.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity such as 250m, 1, 512Mi or 1Gi")
    match = _QUANTITY_SPLIT.match(text)
    if match is None:  # pragma: no cover - the grammar above guarantees a leading number
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = Decimal(match.group(1)), match.group(2)
    if suffix in _BINARY_SUFFIXES:
        return number * (Decimal(1024) ** _BINARY_SUFFIXES[suffix])
    if suffix in _DECIMAL_SUFFIXES:
        return number.scaleb(_DECIMAL_SUFFIXES[suffix])
    return number.scaleb(int(suffix[1:]))  # e/E exponent


def is_quantity(value: str | int) -> bool:
    """True when ``value`` is a non-negative Kubernetes quantity."""
    return bool(_QUANTITY_WHOLE.match(str(value)))
