"""The contracts are imported by operators, services and tests alike, so they must not pull
in either side (or anything heavy): only pydantic and the standard library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CONTRACTS = ("kommerce.contracts", "kommerce.contracts.route_table",
             "kommerce.contracts.breaker", "kommerce.contracts.shard_map",
             "kommerce.contracts.mounts", "kommerce.contracts.release",
             *(f"kommerce.contracts.events.{name}"
               for name in ("base", "order", "payment", "product", "review", "shipping",
                            "user")))
FORBIDDEN = ("kubernetes", "kopf", "fastapi", "starlette", "sqlalchemy", "httpx", "aiohttp",
             "orjson", "yaml", "operators", "services", "kommerce.testbed", "kommerce.platform")


@pytest.mark.parametrize("module", CONTRACTS)
def test_a_contract_imports_only_pydantic_and_the_standard_library(module: str) -> None:
    script = (f"import json, sys; import {module}; "
              "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", script], check=True,
                                       capture_output=True, text=True).stdout)
    heavy = sorted(name for name in loaded
                   if any(name == f or name.startswith(f + ".") for f in FORBIDDEN))
    assert heavy == []


@pytest.mark.parametrize("package", ["kommerce.contracts", "kommerce.contracts.events"])
def test_a_package_itself_loads_no_contract(package: str) -> None:
    script = f"import json, sys; import {package}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", script], check=True,
                                       capture_output=True, text=True).stdout)
    assert [name for name in loaded if name.startswith(package + ".")] == []
    assert "pydantic" not in loaded
