"""KafkaJS (Node.js) against a real chronik-server: tests/interop/kafkajs/roundtrip.js."""
import os
import shutil
import subprocess

import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kafkajs")


def test_kafkajs_produce_consume_group_commit(broker):
    if shutil.which("node") is None:
        pytest.fail("node is required for the KafkaJS interop test")
    if not os.path.isdir(os.path.join(HERE, "node_modules", "kafkajs")):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=HERE, check=True)
    r = subprocess.run(["node", "roundtrip.js", broker], cwd=HERE, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kafkajs ok" in r.stdout
