"""Free loopback ports and readiness waits."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on right now; the OS picks it so parallel runs do not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``ready`` until it holds; fail early with the reason ``alive`` gives if the
    process behind it died, so a crashed server is reported as such and not as a time-out."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and (problem := alive()):
            raise RuntimeError(f"{what} is not ready: {problem}")
        try:
            if ready():
                return
        except Exception as error:  # a probe failing just means "not yet"; keep why
            last_error = error
        time.sleep(interval)
    reason = f" (last probe error: {last_error!r})" if last_error else ""
    raise TimeoutError(f"{what} was not ready within {timeout:.0f}s{reason}")
