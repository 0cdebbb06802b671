"""When two resources claim one thing, who owns it: one rule for every kind; pure.

Two BlueGreenRollouts on one CommerceService, two CircuitBreakerPolicies on one target, two
CommerceServices declaring one gateway path prefix: CEL cannot see across objects, so the
apiserver accepts all of them and the operator must choose. Whatever the kind, the choice
is the same:

* exactly one claimant owns the thing: the oldest (``metadata.creationTimestamp``), ties
  broken by name — so an object that has worked for weeks is never displaced by a newer
  one, and the choice does not change while both exist;
* every other claimant touches nothing that belongs to the thing and reports ``Ready=False``
  and ``Degraded=True`` with the kind's conflict reason and a message naming the owner;
* once the owner goes, the next in the same order takes over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

KeyT = TypeVar("KeyT")


@dataclass(frozen=True, order=True)
class Claimant:
    """One resource claiming something; ordered oldest first, then by name.

    ``created`` is the RFC 3339 ``creationTimestamp`` as the apiserver writes it (UTC,
    second precision), so text order is time order; empty sorts first (not yet known)."""

    created: str
    name: str


@dataclass(frozen=True)
class Conflict(Generic[KeyT]):
    """Several claimants of one ``claimed`` thing: ``owner`` has it, ``others`` stand by."""

    claimed: KeyT
    owner: Claimant
    others: tuple[Claimant, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Every claimant, owner first."""
        return (self.owner.name, *(other.name for other in self.others))

    def loses(self, name: str) -> bool:
        """True when ``name`` claims the thing but does not own it."""
        return any(other.name == name for other in self.others)


def owner(claimants: Iterable[Claimant]) -> Claimant | None:
    """The claimant that owns the thing: oldest, then first by name."""
    return min(claimants, default=None)


def ranked(claimants: Iterable[Claimant]) -> list[Claimant]:
    """Claimants in ownership order: the owner, then who takes over after it."""
    return sorted(set(claimants))


def conflicts(claims: Mapping[KeyT, Sequence[Claimant]]) -> list[Conflict[KeyT]]:
    """Every thing claimed by more than one claimant, with its owner chosen by the rule."""
    found = []
    for claimed, claimants in claims.items():
        order = ranked(claimants)
        if len(order) > 1:
            found.append(Conflict(claimed, order[0], tuple(order[1:])))
    return found


def conflict_of(name: str, found: Iterable[Conflict[KeyT]]) -> Conflict[KeyT] | None:
    """The first conflict ``name`` loses, if any."""
    return next((conflict for conflict in found if conflict.loses(name)), None)
