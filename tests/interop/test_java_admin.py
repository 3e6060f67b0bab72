"""Apache Kafka's Java Admin client (kafka-clients 4.3.0) against a 3-node cluster:
tests/interop/java/JavaAdminApis.java — describeLogDirs, electLeaders,
alterPartitionReassignments (a replica move that completes) and describeMetadataQuorum.
Jars and cluster come from test_java_client.py."""
import os
import subprocess

import pytest
from test_java_client import CACHE, HERE, client_jars, cluster3, jdk_tool  # noqa: F401 (fixture)

SOURCE = os.path.join(HERE, "java", "JavaAdminApis.java")


def test_java_admin_log_dirs_elections_a_replica_move_and_the_quorum(cluster3):  # noqa: F811
    javac, java = jdk_tool("javac"), jdk_tool("java")
    if not javac or not java:
        pytest.skip("no JDK on this machine (javac/java not on PATH or in JAVA_HOME)")
    cp = os.pathsep.join(client_jars())
    classes = os.path.join(CACHE, "classes")
    os.makedirs(classes, exist_ok=True)
    subprocess.run([javac, "-d", classes, "-cp", cp, SOURCE], check=True, timeout=300)
    r = subprocess.run(
        [java, "-cp", cp + os.pathsep + classes, "JavaAdminApis", cluster3, "3"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "java admin ok: kafka-clients 4.3.0" in r.stdout, r.stdout + r.stderr
