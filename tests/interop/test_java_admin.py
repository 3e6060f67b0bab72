"""Apache Kafka's Java Admin client (kafka-clients 4.3.0) against a 3-node cluster:
tests/interop/java/JavaAdminApis.java — describeLogDirs, electLeaders,
alterPartitionReassignments (a replica move that completes) and describeMetadataQuorum.
Jars and cluster come from test_java_client.py."""
import os
import subprocess

from test_java_client import HERE, cluster3, java_program  # noqa: F401 (fixture)

SOURCE = os.path.join(HERE, "java", "JavaAdminApis.java")


def test_java_admin_log_dirs_elections_a_replica_move_and_the_quorum(cluster3):  # noqa: F811
    r = subprocess.run(
        java_program(SOURCE) + ["JavaAdminApis", cluster3, "3"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "java admin ok: kafka-clients 4.3.0" in r.stdout, r.stdout + r.stderr
