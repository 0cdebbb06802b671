"""Fails when requirements.lock no longer covers pyproject.toml: a requirement of the project
or its test extras that the lock does not pin, or pins outside the range the project asks for.

Offline and instant, so ``make lint`` can run it; ``make lock`` is the fix it names.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"


def pinned(lock: Path) -> dict[str, str]:
    """Name -> version of every ``name==version`` line (markers and comments left aside)."""
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name.split("[", 1)[0])] = version.strip()
    return pins


def problems(project: dict, pins: dict[str, str]) -> list[str]:
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    found = []
    for text in wanted:
        requirement = Requirement(text)
        version = pins.get(canonicalize_name(requirement.name))
        if version is None:
            found.append(f"{requirement.name} is not in requirements.lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            found.append(f"{requirement.name}=={version} in requirements.lock is outside "
                         f"{requirement.specifier}")
    return found


def main() -> int:
    if not LOCK.exists():
        print("requirements.lock is missing: run `make lock`", file=sys.stderr)
        return 1
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = problems(project, pinned(LOCK))
    for problem in found:
        print(f"{problem}: run `make lock`", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
