"""Every index a handler asks for is registered once its kind's handlers are imported, alone
or with the others: Kopf hands an index to a handler by its name, so a missing one would
show only when the handler first runs, as a missing keyword argument.

A handler asks for an index by reading it from its ``**kwargs`` by name (Kopf's callback
protocols cannot name an operator's own indexes; see operators/indexes.py), or by a
parameter typed ``kopf.Index``; the check finds both."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from kommerce.operator_cli import HANDLER_MODULES

ASKED_AND_REGISTERED = """
import ast, importlib, inspect, json, sys, textwrap, typing
import kopf

def read_from_kwargs(fn):
    kwargs = [p.name for p in inspect.signature(fn).parameters.values()
              if p.kind is inspect.Parameter.VAR_KEYWORD]
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return {node.slice.value for node in ast.walk(tree)
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
            and node.value.id in kwargs and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)}

importlib.import_module(sys.argv[1])
registry = kopf.get_default_registry()
registered = {handler.id for handler in registry._indexing.get_all_handlers()}
asked, handlers = set(), 0
for kind in (registry._changing, registry._watching, registry._spawning):
    for handler in kind.get_all_handlers():
        handlers += 1
        hints = typing.get_type_hints(handler.fn)
        asked |= {name for name, hint in hints.items() if typing.get_origin(hint) is kopf.Index}
        asked |= read_from_kwargs(handler.fn)
print(json.dumps({"asked": sorted(asked), "registered": sorted(registered),
                  "handlers": handlers}))
"""


def _asked_and_registered(module: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", ASKED_AND_REGISTERED, module],
                            capture_output=True, text=True, check=True, timeout=60)
    return json.loads(result.stdout)


@pytest.mark.parametrize("module", [m for m in HANDLER_MODULES if m.endswith(".handlers")])
def test_a_kinds_handlers_alone_register_every_index_they_ask_for(module: str) -> None:
    found = _asked_and_registered(module)
    assert found["handlers"], "the check found no handler to read"
    assert set(found["asked"]) <= set(found["registered"])


def test_the_check_finds_the_indexes_a_handler_reads_from_its_kwargs() -> None:
    found = _asked_and_registered("operators.commerceservice.handlers")
    assert found["asked"] == ["breaker_policies", "commerce_services"]


def test_the_index_three_kinds_read_is_declared_in_the_shared_module() -> None:
    assert _asked_and_registered("operators.indexes")["registered"] == ["breaker_policies"]
