"""Starts a real chronik-server on random loopback ports with a temp data dir."""
import os
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    """A free port below the ephemeral range, so a reconnecting client cannot self-connect."""
    import random
    while True:
        port = random.randint(20000, 31999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def server_binary():
    b = os.environ.get("CHRONIK_SERVER_BIN")
    if b:
        return b
    for profile in ("debug", "release"):
        p = os.path.join(ROOT, "target", profile, "chronik-server")
        if os.path.exists(p):
            return p
    raise RuntimeError("build chronik-server first (cargo build --bin chronik-server)")


def wait_ready(port, proc, timeout=60, brokers=1):
    """Until the broker on `port` lists `brokers` brokers (or `proc`, if given, exits)."""
    from confluent_kafka.admin import AdminClient

    deadline = time.time() + timeout
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"chronik-server exited with {proc.returncode}")
        try:
            md = admin.list_topics(timeout=2)
            if len(md.brokers) >= brokers:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError("chronik-server did not become ready")


# Every test using `broker` runs against one shard and against four: with four, most
# partitions and group coordinators live on another shard than the client's connection.
SHARDS = [1, 4]


@pytest.fixture(params=SHARDS, ids=[f"{n}-shard" for n in SHARDS])
def broker(request):
    tmp = tempfile.mkdtemp(prefix="chronik-interop-")
    port, cport = free_port(), free_port()
    proc = subprocess.Popen(
        [server_binary(), "--listen", f"127.0.0.1:{port}", "--controller-listen",
         f"127.0.0.1:{cport}", "--data-dir", os.path.join(tmp, "data"), "--no-pin",
         "--cores", str(request.param), "--metrics-listen", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
        subprocess.run(["rm", "-rf", tmp])


@pytest.fixture
def sasl_broker():
    """A 2-shard node with a PLAINTEXT listener (for readiness) and a SASL_PLAINTEXT one, its
    users `alice:alice-secret` and `admin:admin-secret` from --sasl-bootstrap-users. Yields the
    SASL_PLAINTEXT address."""
    tmp = tempfile.mkdtemp(prefix="chronik-interop-sasl-")
    port, sasl_port, cport = free_port(), free_port(), free_port()
    users = os.path.join(tmp, "users.txt")
    with open(users, "w") as f:
        f.write("alice:alice-secret\nadmin:admin-secret\n")
    proc = subprocess.Popen(
        [server_binary(), "--listeners",
         f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
         "--inter-broker-listener-name", "PLAINTEXT", "--sasl-bootstrap-users", users,
         "--controller-listen", f"127.0.0.1:{cport}", "--data-dir", os.path.join(tmp, "data"),
         "--no-pin", "--cores", "2", "--metrics-listen", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, proc)
        yield f"127.0.0.1:{sasl_port}"
    finally:
        proc.kill()
        proc.wait()
        subprocess.run(["rm", "-rf", tmp])
