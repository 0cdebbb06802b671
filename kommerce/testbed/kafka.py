"""A real single-node Kafka broker (KRaft, broker and controller in one JVM) on loopback.

The broker is Apache Kafka's own jars from Maven Central, gathered by ``mvn`` from the
pinned POM in ``maven/kafka/`` into the version-keyed cache and run on the machine's
Java 17+. There is no ZooKeeper in Kafka 4, so the storage folder is formatted once with a
fresh cluster id and a standalone controller quorum; after that the same folder can be
stopped and started again, which is what :meth:`KafkaBroker.restart` is for.

Everything that Kafka would normally replicate is set to one replica and one partition so a
single node is a complete cluster, and consumer groups form without the usual 3 s delay.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kommerce.testbed.cache import cache_dir, say, step
from kommerce.testbed.ports import LOOPBACK, free_port, port_open, wait_until
from kommerce.testbed.process import ServerProcess

KAFKA_VERSION = "4.4.0"
POM = Path(__file__).parent / "maven" / "kafka" / "pom.xml"
NODE_ID = 1

BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"

# INFO from the broker itself, but not the few hundred lines of config it dumps per start.
LOG4J2_PROPERTIES = """\
status = warn
# Kafka logs its own shutdown from a JVM shutdown hook; log4j must not close before it.
shutdownHook = disable
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.config.name = org.apache.kafka.common.config
logger.config.level = warn
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
"""

JVM_OPTIONS = (
    # A test broker holds a few small topics; 512 MB is plenty and leaves room on small CI.
    "-Xms128m",
    "-Xmx512m",
    # One GC thread and the quick JIT tier: on a 2-core runner the broker starts faster and
    # competes less with the tests than with the server defaults (G1, full tiered JIT).
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)


def java_binary() -> Path:
    """``$JAVA_HOME/bin/java`` when set, else ``java`` on PATH."""
    if java_home := os.environ.get("JAVA_HOME"):
        return Path(java_home) / "bin" / "java"
    if on_path := shutil.which("java"):
        return Path(on_path)
    raise RuntimeError("Kafka needs Java 17 or newer: set JAVA_HOME or put java on PATH")


def kafka_libs(version: str = KAFKA_VERSION) -> Path:
    """The folder of broker jars for ``version``, fetched with Maven on first use only.

    Jars are copied into a ``.partial`` folder and renamed at the end, so an interrupted
    download is redone rather than mistaken for a complete classpath.
    """
    libs = cache_dir("kafka", version) / "libs"
    if libs.is_dir():
        say(f"Kafka {version}: cached jars in {libs}")
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Kafka's jars come from Maven Central: install Maven (mvn) first")
    partial = libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    with step(f"mvn: Kafka {version} jars (first run only)"):
        result = subprocess.run(
            [mvn, "-B", "-q", "-f", str(POM), f"-Dkafka.version={version}",
             "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={partial}"],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"mvn could not fetch Kafka {version}:\n{(result.stdout + result.stderr)[-4000:]}")
    partial.rename(libs)
    return libs


def random_cluster_id() -> str:
    """A cluster id in Kafka's own format (URL-safe base64 of 16 random bytes, unpadded),
    made here so formatting needs no extra JVM start for ``kafka-storage random-uuid``."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class KafkaBroker:
    """One KRaft node acting as broker and controller, its log segments in ``data_dir``.

    Both ports are chosen once, when the object is made, so a restart comes back on the same
    ``bootstrap_servers`` that clients already hold.
    """

    data_dir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    host: str = LOOPBACK
    version: str = KAFKA_VERSION
    _process: ServerProcess | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "kafka-logs"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "kafka.log"

    def start(self, timeout: float = 120.0) -> KafkaBroker:
        libs = kafka_libs(self.version)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES)
        java: list[str | Path] = [java_binary(), *JVM_OPTIONS,
                                  f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
        if not (self.log_dir / "meta.properties").exists():
            self._format_storage(java, config)
        self._process = ServerProcess(
            "kafka", [*java, BROKER_MAIN, config], log_path=self.log_path).start()
        wait_until(self._serves_metadata, timeout=timeout, what="Kafka",
                   interval=0.25, alive=self._process.exit_problem)
        say(f"Kafka {self.version} (KRaft) on {self.bootstrap_servers}")
        return self

    def stop(self) -> None:
        """Stop with SIGTERM, which Kafka answers with a controlled shutdown that flushes
        every segment, so what was acknowledged before is there after a restart."""
        if self._process is not None:
            self._process.stop(timeout=60.0)
            self._process = None

    def restart(self, timeout: float = 120.0) -> KafkaBroker:
        """Stop and start again on the same ports and the same data, as a broker bounce in
        production would: topics, messages and committed offsets survive."""
        self.stop()
        wait_until(lambda: (not port_open(self.port, self.host)
                   and not port_open(self.controller_port, self.host)),
                   timeout=30.0, what="Kafka's ports to be released")
        return self.start(timeout=timeout)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_config(self) -> Path:
        controller = f"{self.host}:{self.controller_port}"
        settings = {
            "process.roles": "broker,controller",
            "node.id": NODE_ID,
            "controller.quorum.bootstrap.servers": controller,
            "listeners": f"PLAINTEXT://{self.bootstrap_servers},CONTROLLER://{controller}",
            "advertised.listeners":
                f"PLAINTEXT://{self.bootstrap_servers},CONTROLLER://{controller}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": self.log_dir,
            # Topics appear on first use, as they do for services in development.
            "auto.create.topics.enable": "true",
            "num.partitions": 1,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            # Kafka's internal topics default to 3 replicas and 50 partitions; one of each
            # is all a single node can hold and makes the first consumer group quick.
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            # No waiting for more members before the first rebalance: tests have one.
            "group.initial.rebalance.delay.ms": 0,
        }
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        return config

    def _format_storage(self, java: list[str | Path], config: Path) -> None:
        """Write ``meta.properties`` and the bootstrap checkpoint, with this node as the
        whole controller quorum (``--standalone``)."""
        with step(f"kafka-storage format {self.log_dir}"):
            result = subprocess.run(
                [*java, STORAGE_TOOL_MAIN, "format", "--standalone",
                 f"--cluster-id={random_cluster_id()}", "--config", config],
                capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"kafka-storage format failed:\n{(result.stdout + result.stderr)[-4000:]}")

    def _serves_metadata(self) -> bool:
        """True once the broker answers a Metadata request and lists itself, i.e. it has
        joined its own controller and clients can bootstrap from it."""
        if not port_open(self.port, self.host):
            return False
        return self.port in metadata_broker_ports(self.host, self.port)


def metadata_broker_ports(host: str, port: int, timeout: float = 2.0) -> list[int]:
    """Send one Metadata request (v4, no topics) and return the brokers' ports it lists.

    Spoken by hand over a socket so the probe needs no client library and no event loop:
    :meth:`KafkaBroker.restart` is called from inside async tests, where a client that wants
    ``asyncio.run`` cannot be.
    """
    api_key, api_version, correlation_id = 3, 4, 1
    client_id = b"kommerce-testbed"
    body = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + \
        client_id + struct.pack(">i?", 0, False)  # topics: empty list; no auto-creation
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _read_exactly(sock, 4))
        response = _read_exactly(sock, size)
    (answered, _throttle, brokers) = struct.unpack_from(">iii", response, 0)
    if answered != correlation_id:
        return []
    offset, ports = 12, []
    for _ in range(brokers):
        (_node, host_len) = struct.unpack_from(">ih", response, offset)
        offset += 6 + host_len
        (broker_port, rack_len) = struct.unpack_from(">ih", response, offset)
        offset += 6 + max(rack_len, 0)
        ports.append(broker_port)
    return ports


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("Kafka closed the connection mid-response")
        chunks += chunk
    return bytes(chunks)
