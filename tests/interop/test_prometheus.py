"""A real Prometheus scrapes a 3-node cluster: it finds the produced record count and, while a
follower is down, an under-replicated partition. The text format also parses with the official
Python client's parser."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, server_binary, wait_ready

TOPIC = "scraped"
RECORDS = 500


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def wait_until(what, check, timeout=90):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - not up yet
            last = e
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout} s (last: {last!r})")


@pytest.fixture
def cluster():
    """Three nodes, each with its own metrics port; fast fencing so a stopped follower leaves
    the ISR within seconds."""
    tmp = tempfile.mkdtemp(prefix="chronik-prom-")
    secret = os.path.join(tmp, "cluster.secret")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(secret, 0o600)
    nodes = [{"id": i + 1, "port": free_port(), "cport": free_port(), "mport": free_port()}
             for i in range(3)]
    quorum = ",".join(f"{n['id']}@127.0.0.1:{n['cport']}" for n in nodes)
    for n in nodes:
        n["log"] = open(os.path.join(tmp, f"node-{n['id']}.log"), "w")
        n["proc"] = subprocess.Popen(
            [server_binary(), "--node-id", str(n["id"]), "--listen", f"127.0.0.1:{n['port']}",
             "--controller-listen", f"127.0.0.1:{n['cport']}", "--controller-quorum", quorum,
             "--metrics-listen", f"127.0.0.1:{n['mport']}", "--cluster-secret-file", secret,
             "--data-dir", os.path.join(tmp, f"node-{n['id']}"), "--no-pin", "--cores", "2",
             "--broker-session-timeout-ms", "2000", "--broker-heartbeat-interval-ms", "300",
             "--replica-lag-time-max-ms", "3000"],
            stdout=subprocess.DEVNULL, stderr=n["log"],
        )
    try:
        for n in nodes:
            wait_ready(n["port"], n["proc"], brokers=3)
        yield tmp, nodes
    finally:
        for n in nodes:
            if n["proc"].poll() is None:
                n["proc"].kill()
            n["proc"].wait()
            n["log"].close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def prometheus(cluster):
    """Prometheus on a random loopback port, scraping the three nodes every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus server is not installed (tests/run installs Debian's package)")
    tmp, nodes = cluster
    port = free_port()
    targets = ", ".join(f"'127.0.0.1:{n['mport']}'" for n in nodes)
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: chronik\n    static_configs:\n"
                f"      - targets: [{targets}]\n")
    log = open(os.path.join(tmp, "prometheus.log"), "w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_until("prometheus ready", lambda: http_get(f"http://127.0.0.1:{port}/-/ready")[0] == 200)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()


def query(prom, expr):
    """The instant vector of `expr` as [(labels, value)]."""
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = http_get(url)
    data = json.loads(body)
    assert status == 200 and data["status"] == "success", body
    return [(r["metric"], float(r["value"][1])) for r in data["data"]["result"]]


def test_prometheus_sees_produced_records_and_an_under_replicated_partition(cluster, prometheus):
    tmp, nodes = cluster
    bootstrap = ",".join(f"127.0.0.1:{n['port']}" for n in nodes)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=3)],
                             operation_timeout=20)
    fs[TOPIC].result(timeout=30)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(RECORDS):
        p.produce(TOPIC, value=f"v{i}".encode())
    assert p.flush(30) == 0

    # Each node's text parses with the Prometheus client's parser; the leader counted them.
    produced = 0.0
    for n in nodes:
        status, text = http_get(f"http://127.0.0.1:{n['mport']}/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name in ("chronik_records_produced", "chronik_request_latency_seconds",
                     "chronik_requests", "chronik_partitions",
                     "chronik_under_replicated_partitions", "chronik_controller_is_leader",
                     "chronik_raft_commit_index", "chronik_shard_busy_ratio",
                     "chronik_connections", "chronik_isr_shrinks", "chronik_log_size_bytes"):
            assert name in families, f"{name} missing from node {n['id']}"
        assert families["chronik_request_latency_seconds"].type == "histogram"
        produced += sum(s.value for s in families["chronik_records_produced"].samples
                        if s.name == "chronik_records_produced_total"
                        and s.labels.get("topic") == TOPIC)
        status, _ = http_get(f"http://127.0.0.1:{n['mport']}/health")
        assert status == 200
    assert produced == RECORDS

    expr = f'sum(chronik_records_produced_total{{topic="{TOPIC}"}})'
    wait_until("Prometheus has the produced count",
               lambda: [v for _, v in query(prometheus, expr)] == [RECORDS])
    assert wait_until("one active controller",
                      lambda: sum(v for _, v in query(prometheus, "chronik_controller_is_leader")) == 1)

    # Stop a follower of the partition: the leader shrinks the ISR and reports it.
    md = admin.list_topics(TOPIC, timeout=10)
    leader = md.topics[TOPIC].partitions[0].leader
    follower = next(n for n in nodes if n["id"] != leader)
    follower["proc"].kill()
    follower["proc"].wait()
    found = wait_until("Prometheus sees an under-replicated partition",
                       lambda: [(m, v) for m, v in
                                query(prometheus, "chronik_under_replicated_partitions")
                                if v >= 1])
    instance = found[0][0]["instance"]
    leader_node = next(n for n in nodes if n["id"] == leader)
    assert instance == f"127.0.0.1:{leader_node['mport']}", found
    wait_until("the ISR shrink is counted",
               lambda: sum(v for _, v in query(prometheus, "chronik_isr_shrinks_total")) >= 1)
