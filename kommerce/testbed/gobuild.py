"""Build Go commands from the pinned manifests in ``gomod/`` into the version-keyed cache.

Each folder in ``gomod/`` is a tiny Go module whose ``go.mod``/``go.sum`` pin one upstream
release (kubernetes, etcd, kwok, stripe-mock). Binaries land in
``.cache/bin/<module>-<hash of go.mod>/`` so a bumped pin rebuilds and an unchanged one is
reused in milliseconds. Go's own module and build caches stay where Go keeps them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from kommerce.testbed.cache import cache_dir, say, step

GOMOD_DIR = Path(__file__).parent / "gomod"


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # go.sum in each manifest pins every hash; the checksum database is not reachable here.
    env.setdefault("GOSUMDB", "off")
    env.setdefault("GOFLAGS", "-mod=mod")
    env.setdefault("CGO_ENABLED", "0")
    return env


def _binary_dir(module: str) -> Path:
    # The manifest alone names the pins; a module with a main package of its own (the node's
    # CoreDNS and sandbox process) rebuilds when its Go code changes too.
    folder = GOMOD_DIR / module
    hasher = hashlib.sha256((folder / "go.mod").read_bytes())
    for source in sorted(folder.glob("*.go")):
        if source.name != "tools.go":
            hasher.update(source.name.encode() + source.read_bytes())
    digest = hasher.hexdigest()[:12]
    return cache_dir("bin", f"{module}-{digest}")


def go_binaries(module: str, packages: dict[str, str]) -> dict[str, Path]:
    """Return ``{command name: binary path}``, building whatever is not in the cache yet.

    ``packages`` maps the command name to its Go import path.
    """
    out = _binary_dir(module)
    wanted = {name: out / name for name in packages}
    missing = [name for name, path in wanted.items() if not path.exists()]
    if missing:
        with step(f"go build {module}: {', '.join(missing)} (first run only; minutes)"):
            for name in missing:
                # One command per binary names the output exactly; Go's build cache still
                # compiles the shared dependencies only once.
                partial = wanted[name].with_suffix(".partial")
                result = subprocess.run(
                    ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial),
                     packages[name]],
                    cwd=GOMOD_DIR / module, env=_go_env(), capture_output=True, text=True,
                )
                if result.returncode != 0:
                    raise RuntimeError(
                        f"go build {packages[name]} failed:\n{result.stderr[-4000:]}")
                partial.rename(wanted[name])
    else:
        say(f"{module}: cached binaries in {out}")
    return wanted


def go_module_dir(module_path: str, version: str) -> Path:
    """Download a Go module (source only) and return its folder in Go's module cache."""
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{module_path}@{version}"],
        cwd=GOMOD_DIR, env=_go_env(), capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"go mod download {module_path}@{version} failed:\n{result.stderr}")
    import json

    return Path(json.loads(result.stdout)["Dir"])
