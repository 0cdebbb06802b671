"""Session-wide real servers for the whole suite.

Each server starts once per test run, on first use, and is shared by every test that asks
for it; tests isolate themselves with their own database, key prefix, topic or namespace.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kommerce.testbed.elasticsearch import SearchEngine
    from kommerce.testbed.kafka import KafkaBroker
    from kommerce.testbed.kube import ControlPlane
    from kommerce.testbed.operator import OperatorProcess
    from kommerce.testbed.postgres import PostgresServer
    from kommerce.testbed.redis import RedisServer
    from kommerce.testbed.stripe_mock import StripeMock
    from tests.shop import Shop


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    from kommerce.testbed.postgres import PostgresServer

    server = PostgresServer(tmp_path_factory.mktemp("postgres") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    from kommerce.testbed.redis import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    from kommerce.testbed.kafka import KafkaBroker

    broker = KafkaBroker(tmp_path_factory.mktemp("kafka")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def stripe_mock() -> Iterator[StripeMock]:
    from kommerce.testbed.stripe_mock import StripeMock

    server = StripeMock().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    from kommerce.testbed.kube import ControlPlane

    plane = ControlPlane(Path(tmp_path_factory.mktemp("kube"))).start()
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def search_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchEngine]:
    from kommerce.testbed.elasticsearch import SearchEngine

    engine = SearchEngine(tmp_path_factory.mktemp("elasticsearch")).start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def kommerce_operator(control_plane: ControlPlane) -> Iterator[OperatorProcess]:
    """The operator, running as its own ServiceAccount against the session cluster."""
    from kommerce.testbed.operator import OperatorProcess

    operator = OperatorProcess(control_plane).start()
    yield operator
    operator.stop()


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The whole platform (``kommerce up --detach``) behind its gateway, shared by the tests
    that act as shoppers and attackers; each test registers shoppers of its own."""
    from tests.shop import running_shop

    with running_shop(tmp_path_factory.mktemp("shop") / "kommerce") as running:
        yield running
