"""The supervisor's own keeper: when the supervisor dies, start one that takes over.

The supervisor restarts every process of the platform but itself. The watchdog is one more
supervised process (so the supervisor restarts it in turn) whose only job is the other
direction: while the state file exists and names no running supervisor, it starts
``kommerce supervise`` in a session of its own, which takes over from the state file and
the launch specs (``supervisor.py``). A platform that was stopped has no state file, so the
watchdog then exits; ``kommerce down`` stops it before it stops anything else, so it never
starts a supervisor in the middle of a stop.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from kommerce.platform.state import PlatformState, ProcessRecord
from kommerce.platform.supervisor import PLATFORM_LOG, supervisor_lock_free
from kommerce.testbed.process import ServerProcess

NAME = "watchdog"
#: How long a new supervisor may take to take over before it is started again.
TAKEOVER_TIMEOUT = 120.0
#: The wait before trying again after a supervisor that was to take over exited.
RETRY_DELAY = 5.0


def start_watchdog(state: PlatformState, processes: dict[str, ServerProcess],
                   logs: Path) -> None:
    """Start the watchdog of ``state``'s platform and record it as one more supervised
    process, the last: stopping goes newest first, so it is stopped before the rest."""
    process = ServerProcess(NAME, [sys.executable, "-m", __name__, "--data-dir",
                                   state.data_dir], log_path=logs / f"{NAME}.log").start()
    assert process.pid is not None
    processes[NAME] = process
    state.processes.append(ProcessRecord.of(NAME, process.pid, 0, process.log_path,
                                            supervised=True))
    state.save()


def note(data_dir: Path, message: str) -> None:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with open(data_dir / "logs" / PLATFORM_LOG, "a") as log:
        log.write(f"{stamp} [watchdog] {message}\n")


def watch(data_dir: Path, interval: float = 0.5) -> None:
    """Keep a supervisor running for ``data_dir`` until its platform stops."""
    started: list[subprocess.Popen[bytes]] = []
    last_start: float | None = None  # of the takeover under way; None while one supervises
    while (state := PlatformState.load(data_dir)) is not None:
        started = [process for process in started if process.poll() is None]  # reap
        now = time.monotonic()
        if state.supervisor_running() or not supervisor_lock_free(data_dir):
            last_start = None
        elif last_start is None or now - last_start > TAKEOVER_TIMEOUT \
                or (not started and now - last_start >= RETRY_DELAY):
            note(data_dir, f"the supervisor (pid {state.supervisor_pid}) is gone; starting "
                           "one that takes over")
            started.append(_start_supervisor(data_dir))
            last_start = now
        time.sleep(interval)


def _start_supervisor(data_dir: Path) -> subprocess.Popen[bytes]:
    with open(data_dir / "logs" / PLATFORM_LOG, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "kommerce.cli", "supervise", "--data-dir", str(data_dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    watch(parser.parse_args().data_dir.resolve())


if __name__ == "__main__":
    main()
