"""A real PostgreSQL server on a free loopback port.

Debian's PostgreSQL (with contrib, for ``pg_trgm``) is preferred; pgserver's bundled build
from PyPI is the fallback where Debian's is missing. PostgreSQL refuses to run as root, so
under root the server runs as the ``postgres`` system user (or ``nobody``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kommerce.testbed.cache import say, step
from kommerce.testbed.ports import LOOPBACK, free_port, port_open, wait_until
from kommerce.testbed.process import ServerProcess

SUPERUSER = "kommerce"


def postgres_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``postgres``: ``KOMMERCE_PG_BIN``, Debian's newest,
    or pgserver's."""
    if explicit := os.environ.get("KOMMERCE_PG_BIN"):
        return Path(explicit)
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_major_version)
    if debian:
        return Path(debian[-1]).parent
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _major_version(path: str) -> int:
    return int(Path(path).parent.parent.name)


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _as_user(user: pwd.struct_passwd | None) -> list[str]:
    if user is None:
        return []
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]


@dataclass
class PostgresServer:
    """One PostgreSQL cluster: ``initdb`` into ``data_dir``, then ``postgres`` on ``port``."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    host: str = LOOPBACK
    _process: ServerProcess | None = None

    @property
    def dsn(self) -> str:
        """SQLAlchemy URL for the asyncpg driver, to the default database."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def libpq_dsn(self, database: str = "postgres") -> str:
        """Plain ``postgresql://`` form for asyncpg and psql."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> PostgresServer:
        bin_dir = postgres_bin_dir()
        user = _run_as()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
            _ensure_traversable(self.data_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            with step(f"initdb {self.data_dir}"):
                subprocess.run(
                    [*_as_user(user), bin_dir / "initdb", "-D", self.data_dir, "-U", SUPERUSER,
                     "--auth=trust", "--encoding=UTF8", "--no-sync", "--locale=C"],
                    check=True, capture_output=True,
                )
        if self.host != LOOPBACK:
            self._trust_own_subnets()
        # Clients connect over TCP only; no Unix socket, whose path (limited to 107 bytes)
        # a data folder deep in a temporary or user folder would exceed.
        self._process = ServerProcess(
            "postgres",
            [*_as_user(user), bin_dir / "postgres", "-D", self.data_dir, "-p", str(self.port),
             "-c", f"listen_addresses={self.host}", "-c", "unix_socket_directories=",
             "-c", "max_connections=300", "-c", "shared_buffers=128MB",
             "-c", "synchronous_commit=off", "-c", "fsync=off", "-c", "full_page_writes=off"],
            log_path=self.data_dir.parent / f"postgres-{self.port}.log",
        ).start()
        # An open port is not enough: after a restart the server answers "the database
        # system is starting up" until recovery ends; pg_isready says when it takes queries.
        wait_until(lambda: port_open(self.port, self.host) and self._accepts_queries(bin_dir),
                   timeout=timeout, what="PostgreSQL", alive=self._process.exit_problem)
        say(f"PostgreSQL ({bin_dir.parent.name}) on {self.host}:{self.port}")
        return self

    def _trust_own_subnets(self) -> None:
        """initdb trusts loopback only; a server on a bridge (the real node's) is there to be
        reached from the subnets it sits on, the node's Pods."""
        hba = self.data_dir / "pg_hba.conf"
        rule = "host all all samenet trust"
        if rule not in hba.read_text():
            with hba.open("a") as file:
                file.write(f"\n{rule}\n")

    def _accepts_queries(self, bin_dir: Path) -> bool:
        return subprocess.run(
            [bin_dir / "pg_isready", "-h", self.host, "-p", str(self.port), "-U", SUPERUSER,
             "-d", "postgres", "-q"], check=False).returncode == 0

    def create_database(self, name: str) -> str:
        """Create a database (if absent) and return its SQLAlchemy URL.

        Synchronous on purpose (psql, not asyncpg) so fixtures can call it from inside a
        running event loop."""
        psql = [str(postgres_bin_dir() / "psql"), "-h", self.host, "-p", str(self.port),
                "-U", SUPERUSER, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-tAc"]
        exists = subprocess.run([*psql, f"SELECT 1 FROM pg_database WHERE datname='{name}'"],
                                check=True, capture_output=True, text=True).stdout.strip()
        if exists != "1":
            subprocess.run([*psql, f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
        return self.dsn_for(name)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ensure_traversable(path: Path) -> None:
    """The unprivileged server user must be able to reach its data folder."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


def temporary_postgres() -> PostgresServer:
    """A server in a fresh temporary folder, removed by :func:`discard`."""
    return PostgresServer(Path(tempfile.mkdtemp(prefix="kommerce-pg-")) / "data")


def discard(server: PostgresServer) -> None:
    server.stop()
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)
