"""Where the test bed keeps what it downloads and builds, and how it reports long steps."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder in the build cache.

    The cache is git-ignored and keyed by version in its sub-folder names, so a version bump
    builds afresh while an unchanged one is reused. ``KOMMERCE_CACHE_DIR`` moves it.
    """
    root = Path(os.environ.get("KOMMERCE_CACHE_DIR", REPO_ROOT / ".cache"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def say(message: str) -> None:
    """Progress for long steps goes to stderr so it shows through pytest's capture with -s
    and in CI logs, without mixing into anything a command prints on stdout."""
    print(f"[testbed] {message}", file=sys.stderr, flush=True)


@contextmanager
def step(what: str) -> Iterator[None]:
    """Report a set-up step and how long it took."""
    say(f"{what} ...")
    started = time.monotonic()
    yield
    say(f"{what}: done in {time.monotonic() - started:.1f}s")
