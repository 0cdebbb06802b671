"""The indexes more than one kind reads, declared once for the operator process.

Kopf keeps one index per name for the whole process and hands it to every handler that asks
for it by keyword, so an index that several kinds read belongs to none of them: every
CircuitBreakerPolicy by namespace is read by the CommerceService (the mesh settings in its
routes), the BlueGreenRollout (the same settings in both colours' routes) and the policy
itself (the namespace's callers' settings are rendered from all its policies at once).

The kinds' handlers import :func:`policies_in` from here, and ``kommerce operator`` lists
this module among the ones it loads, so no kind imports another kind's handlers for it.
An index that only one kind reads stays in that kind's ``handlers.py``.

A handler reads an index from its ``**kwargs``, by name and with its type on the local:
``breaker_policies: BreakerPolicies = kwargs["breaker_policies"]``. Kopf's callback
protocols (``kopf.TimerFn``, ``kopf.WatchingFn``, ...) cannot name an operator's own indexes,
so a handler declaring one as a parameter would not be the callback its decorator takes;
reading it from ``**kwargs`` fails the same way as a missing parameter would (at the first
run), and ``tests/operators/test_indexes.py`` finds these reads.
"""

from __future__ import annotations

from typing import Any

import kopf

from operators.circuitbreaker.render import PolicyRef
from operators.circuitbreaker.spec import RESOURCE as BREAKER
from operators.circuitbreaker.spec import CircuitBreakerPolicySpec
from operators.schema import InvalidSpec, parse_spec

BreakerPolicies = kopf.Index[str, PolicyRef | None]


@kopf.index(BREAKER.group, BREAKER.version, BREAKER.plural)
def breaker_policies(namespace: str | None, name: str, uid: str, spec: kopf.Spec,
                     meta: kopf.Meta, **_: Any) -> dict[str, PolicyRef | None]:
    """Every policy by namespace, parsed; ``None`` for one whose spec is invalid (it governs
    nothing until fixed, and its own handler reports why)."""
    assert namespace is not None  # the kind is namespaced (operators/crdgen.py)
    try:
        return {namespace: PolicyRef(name, uid, parse_spec(CircuitBreakerPolicySpec, dict(spec)),
                                     created=str(meta.get("creationTimestamp") or ""))}
    except InvalidSpec:
        return {namespace: None}


def policies_in(index: BreakerPolicies, namespace: str,
                without_uid: str | None = None) -> list[PolicyRef]:
    """The valid policies of ``namespace``, less the one with ``without_uid`` (a policy whose
    deletion is being handled, still in the index)."""
    return [entry for entry in index.get(namespace, [])
            if entry is not None and entry.uid != without_uid]
