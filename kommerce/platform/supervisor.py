"""Keep what ``kommerce up`` started running: a process that dies is started again.

The supervisor is the ``up`` process itself: the foreground one, or with ``--detach`` the
child it forks and leaves running (see ``up_cli``). So every data server, service, the
gateway and, with ``--cluster`` on kwok, the control plane (etcd, the apiserver, the
controllers, kwok) and the operator is its own child, and it learns how each one ended from
the kernel (an exit code, or the signal that killed it) instead of guessing from a pid. A
real node's processes (its control plane, containerd, the kubelet) are reported when they
stop, not restarted: the node is built anew on each ``up``.

A process that dies is started again with the same command line, environment and port
(the others hold its address), after a delay that doubles with each death that follows a
restart closely (a crash loop), up to a cap; after a number of such deaths in a row it is
given up on and reported failed, until ``kommerce restart <name>`` asks for it again. Each
death and restart is a line in the platform's log (``logs/platform.log``) and in the
process's own log, and is counted in the state file, which ``kommerce status`` shows.

The supervisor can die too (``kill -9``, the OOM killer). Its children run on (each leads a
session of its own), and what it needs to start any of them again is on disk: the state
file, and each process's command line and environment in ``launch/<name>.json`` (readable
by the owner alone: the environment holds the services' keys). So a new supervisor
(``kommerce supervise``, which the watchdog of ``watchdog.py`` runs when the supervisor is
gone) takes over where the old one stopped. One lock file in the data folder, held for as
long as a supervisor runs, keeps a second one from taking over beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kommerce.platform.state import PlatformState, ProcessRecord
from kommerce.testbed.process import ServerProcess

PLATFORM_LOG = "platform.log"
#: ``kommerce restart`` leaves a ``restart-<name>`` file here for the supervisor to act on.
CONTROL_DIR = "control"
#: How to start each supervised process again, for a supervisor that did not start it.
LAUNCH_DIR = "launch"
#: Held (``flock``) by the running supervisor; the kernel lets go of it when that dies.
LOCK_FILE = "supervisor.lock"


def hold_supervisor_lock(data_dir: Path) -> int | None:
    """The descriptor of the data folder's supervisor lock, now held by this process (keep
    it open for as long as it supervises), or None when another supervisor holds it."""
    descriptor = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def supervisor_lock_free(data_dir: Path) -> bool:
    """Whether no supervisor holds the lock (one that is taking over holds it already)."""
    descriptor = hold_supervisor_lock(data_dir)
    if descriptor is None:
        return False
    os.close(descriptor)
    return True


def save_launch_specs(data_dir: Path, processes: Mapping[str, ServerProcess]) -> None:
    """Write how each process is started, for a supervisor that takes over."""
    folder = data_dir / LAUNCH_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, process in processes.items():
        path = folder / f"{name}.json"
        scratch = path.with_suffix(".tmp")
        descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as spec:
            json.dump({"argv": process.argv, "env": process.env, "log": str(process.log_path),
                       "cwd": str(process.cwd) if process.cwd is not None else None}, spec)
        scratch.replace(path)


def load_launch_specs(data_dir: Path, names: Iterable[str]) -> dict[str, ServerProcess]:
    """The processes of ``names`` as :func:`save_launch_specs` wrote them (not started);
    a name without a readable spec is left out, so it is reported, not restarted."""
    found = {}
    for name in names:
        try:
            spec = json.loads((data_dir / LAUNCH_DIR / f"{name}.json").read_text())
        except (OSError, ValueError):
            continue
        process = ServerProcess(name, spec["argv"], log_path=Path(spec["log"]),
                                cwd=Path(spec["cwd"]) if spec["cwd"] else None)
        process.env = spec["env"]  # as it was, not merged into this process's environment
        found[name] = process
    return found


@dataclass(frozen=True)
class RestartPolicy:
    """How soon a dead process is started again, and when to stop trying."""

    first_delay: float = 1.0
    max_delay: float = 30.0
    #: Deaths in a row, each soon after a start, after which the process is given up on.
    crash_loop_limit: int = 5
    #: A process that ran this long before dying was healthy: its count starts over.
    stable_after: float = 60.0

    def delay(self, deaths: int) -> float:
        """The wait before restart number ``deaths`` of a run of quick deaths."""
        return float(min(self.max_delay, self.first_delay * 2 ** max(0, deaths - 1)))

    def deaths_in_a_row(self, previous: int, ran_for: float) -> int:
        return 1 if ran_for >= self.stable_after else previous + 1

    def gives_up(self, deaths: int) -> bool:
        return deaths > self.crash_loop_limit


def describe_exit(returncode: int) -> str:
    """``killed by SIGKILL`` or ``exited with code 1``, from ``Popen.returncode``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def request_restart(data_dir: Path, name: str) -> None:
    """Ask the running supervisor of ``data_dir`` to restart ``name`` (it looks twice a
    second)."""
    folder = data_dir / CONTROL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"restart-{name}").touch()


@dataclass
class Child:
    """One supervised process and what the supervisor remembers about it."""

    record: ProcessRecord
    process: ServerProcess
    started_at: float
    deaths: int = 0
    #: When to start it again (monotonic clock); None while it runs or once given up.
    due: float | None = None

    @property
    def popen(self) -> subprocess.Popen[bytes] | None:
        # ServerProcess keeps its Popen private; its returncode is the exit status we want.
        return getattr(self.process, "_proc", None)


class Supervisor:
    """Watches the supervised processes of ``state`` (``processes``: name -> the
    ServerProcess that started it, replaced in place on each restart)."""

    def __init__(self, state: PlatformState, processes: MutableMapping[str, ServerProcess],
                 *, logs: Path, echo: Callable[[str], None] | None = None,
                 policy: RestartPolicy | None = None) -> None:
        self.state = state
        self.processes = processes
        self.logs = logs
        self.echo = echo
        self.policy = policy or RestartPolicy()
        now = time.monotonic()
        self.children = {record.name: Child(record, processes[record.name], now)
                         for record in state.processes
                         if record.supervised and record.name in processes}
        self._reported: set[str] = set()
        self.control = Path(state.data_dir) / CONTROL_DIR
        save_launch_specs(Path(state.data_dir),
                          {name: child.process for name, child in self.children.items()})

    def run(self, stopping: Callable[[], bool], interval: float = 0.5) -> None:
        """Supervise until ``stopping()`` says so (a signal handler sets it)."""
        self.note("supervising " + ", ".join(self.children))
        while not stopping():
            self.tick(stopping)
            time.sleep(interval)

    def tick(self, stopping: Callable[[], bool] = lambda: False) -> None:
        now = time.monotonic()
        for child in self.children.values():
            watched = child.due is None and not child.record.failed
            if watched and (ended := self._ended(child)) is not None:
                self._died(child, ended, now)
        for name in self._requests():
            if not stopping():
                self._restart_on_request(name)
        for child in self.children.values():
            if child.due is not None and child.due <= now and not stopping():
                self._start_again(child)
        for record in self.state.processes:  # the cluster's: reported, not restarted
            if record.name not in self.children and record.name not in self._reported \
                    and not record.running():
                self._reported.add(record.name)
                self.note(f"{record.name} stopped (not supervised); its log: {record.log}")

    # -- deaths and restarts ---------------------------------------------------------------

    def _ended(self, child: Child) -> str | None:
        """None while it runs; otherwise how it ended."""
        popen = child.popen
        if popen is None:
            # Started by a supervisor before this one: not our child, so no exit status.
            return None if child.record.running() else "stopped (exit status unknown)"
        code = popen.poll()
        return None if code is None else describe_exit(code)

    def _died(self, child: Child, ended: str, now: float) -> None:
        record = child.record
        _kill_group(record.pid)  # what it left behind (PostgreSQL's backends) holds its port
        child.deaths = self.policy.deaths_in_a_row(child.deaths, now - child.started_at)
        record.last_exit = ended
        if self.policy.gives_up(child.deaths):
            record.failed = True
            self.state.save()
            self.note(f"{record.name} {ended}; it died {child.deaths} times in a row, each "
                      f"within {self.policy.stable_after:.0f} s of starting: given up "
                      f"(crash loop). `kommerce restart {record.name}` tries again",
                      record)
            return
        delay = self.policy.delay(child.deaths)
        child.due = now + delay
        self.state.save()
        self.note(f"{record.name} (pid {record.pid}) {ended}; restarting it in {delay:.0f} s",
                  record)

    def _start_again(self, child: Child) -> None:
        record, old = child.record, child.process
        fresh = ServerProcess(old.name, old.argv, log_path=old.log_path, env=old.env,
                              cwd=old.cwd)
        try:
            fresh.start()
        except OSError as error:
            child.due = None
            self._died(child, f"could not be started ({type(error).__name__}: {error})",
                       time.monotonic())
            return
        assert fresh.pid is not None
        child.process = self.processes[record.name] = fresh
        child.started_at = time.monotonic()
        child.due = None
        record.replaced_by(fresh.pid)
        record.restarts += 1
        record.failed = False
        self.state.save()
        self.note(f"{record.name} started again as pid {fresh.pid} "
                  f"(restart {record.restarts})", record)

    def _restart_on_request(self, name: str) -> None:
        child = self.children.get(name)
        if child is None:
            self.note(f"restart of {name} requested, but no supervised process has that name")
            return
        record = child.record
        if record.running():
            self.note(f"restarting {name} (pid {record.pid}) as requested", record)
            record.stop()
        popen = child.popen
        code = popen.poll() if popen is not None else None
        record.last_exit = (describe_exit(code) if code is not None else "stopped") \
            + " (restart requested)"
        child.deaths = 0
        self._start_again(child)

    def _requests(self) -> list[str]:
        """The names ``kommerce restart`` asked for since the last look (consumed)."""
        names = []
        with contextlib.suppress(FileNotFoundError):
            for request in sorted(self.control.glob("restart-*")):
                request.unlink(missing_ok=True)
                names.append(request.name.removeprefix("restart-"))
        return names

    # -- the log ---------------------------------------------------------------------------

    def note(self, message: str, record: ProcessRecord | None = None) -> None:
        """A line in the platform's log, in the process's own log, and on the terminal of
        a foreground ``up``."""
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / PLATFORM_LOG, "a") as log:
            log.write(f"{stamp} {message}\n")
        if record is not None:
            with contextlib.suppress(OSError), open(record.log, "a") as log:
                log.write(f"{stamp} [kommerce supervisor] {message}\n")
        if self.echo is not None:
            self.echo(message)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
