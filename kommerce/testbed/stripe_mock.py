"""stripe-mock, Stripe's own API mock, built from its Go module and run on loopback.

It validates every request against Stripe's OpenAPI spec but keeps no state and never
declines: it proves the shape of our calls, not payment outcomes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kommerce.testbed.cache import say
from kommerce.testbed.gobuild import go_binaries
from kommerce.testbed.ports import LOOPBACK, free_port, port_open, wait_until
from kommerce.testbed.process import ServerProcess

STRIPE_MOCK_VERSION = "v0.203.0"  # pinned in gomod/stripemock/go.mod


def stripe_mock_binary() -> Path:
    return go_binaries("stripemock", {"stripe-mock": "github.com/stripe/stripe-mock"})[
        "stripe-mock"]


@dataclass
class StripeMock:
    port: int = field(default_factory=free_port)
    host: str = LOOPBACK
    _process: ServerProcess | None = None

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> StripeMock:
        log = Path(tempfile.mkdtemp(prefix="kommerce-stripe-")) / "stripe-mock.log"
        self._process = ServerProcess(
            "stripe-mock",
            [stripe_mock_binary(), "-http-port", str(self.port)],
            log_path=log,
        ).start()
        wait_until(lambda: port_open(self.port, self.host), timeout=timeout, what="stripe-mock",
                   alive=self._process.exit_problem)
        say(f"stripe-mock {STRIPE_MOCK_VERSION} on {self.api_base}")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
