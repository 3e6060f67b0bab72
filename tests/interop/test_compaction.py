"""Compacted topics (cleanup.policy=compact) read from the beginning by confluent-kafka and by
Apache Kafka's Java client: after the log cleaner has run, each sees exactly one record per live
key, with its latest value, in offset order across the gaps compaction leaves; tombstoned keys
are gone. One topic per codec, so the batches the cleaner recompressed are read by both."""
import os
import shutil
import subprocess
import tempfile
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import free_port, server_binary, wait_ready
from test_java_client import HERE, java_program

KEYS, VERSIONS, TOMBSTONED = 100, 20, 10
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
EXPECTED = {f"k{i}": f"k{i}-v{VERSIONS - 1}" for i in range(TOMBSTONED, KEYS)}


@pytest.fixture
def cleaning_broker():
    """One node whose cleaner looks for work every 100 ms."""
    tmp = tempfile.mkdtemp(prefix="chronik-compaction-")
    port, cport = free_port(), free_port()
    proc = subprocess.Popen(
        [server_binary(), "--listen", f"127.0.0.1:{port}", "--controller-listen",
         f"127.0.0.1:{cport}", "--data-dir", os.path.join(tmp, "data"), "--no-pin",
         "--cores", "2", "--log-cleaner-backoff-ms", "100", "--metrics-listen", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def create_compacted(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    configs = {"cleanup.policy": "compact", "segment.bytes": "8192", "segment.ms": "200",
               "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}
    for f in admin.create_topics([NewTopic(topic, 1, 1, config=configs)]).values():
        f.result(timeout=30)


def produce_versions(bootstrap, topic, codec):
    """KEYS keys x VERSIONS versions; the last version of k0..k9 is a tombstone. Then, once
    segment.ms has passed, one record that rolls the log so every version is cleanable."""
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 2,
                  "acks": "all"})
    for v in range(VERSIONS):
        for i in range(KEYS):
            tomb = v == VERSIONS - 1 and i < TOMBSTONED
            p.produce(topic, key=f"k{i}", value=None if tomb else f"k{i}-v{v}", partition=0)
        p.poll(0)
    assert p.flush(30) == 0
    time.sleep(0.4)
    p.produce(topic, key="roll", value="roll", partition=0)
    assert p.flush(30) == 0


def read_confluent(bootstrap, topic):
    """Every record of partition 0 up to the high watermark: [(offset, key, value)]."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compaction-reader",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out = []
        deadline = time.time() + 30
        while not (out and out[-1][0] >= high - 1):
            assert time.time() < deadline, f"{topic}: stuck after {out[-1:]} (high {high})"
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                continue
            value = None if m.value() is None else m.value().decode()
            out.append((m.offset(), m.key().decode(), value))
        return out
    finally:
        c.close()


def keyed_latest(recs):
    """{key: value} of the records other than the roll marker, checking offsets increase and
    each key appears once (the log is fully compacted)."""
    offsets = [o for o, _, _ in recs]
    assert offsets == sorted(set(offsets)), "offsets strictly increase"
    keyed = [(k, v) for _, k, v in recs if k != "roll"]
    out = dict(keyed)
    return out if len(out) == len(keyed) else None


def wait_compacted(bootstrap, topic):
    deadline = time.time() + 60
    while True:
        recs = read_confluent(bootstrap, topic)
        if keyed_latest(recs) == EXPECTED:
            return recs
        assert time.time() < deadline, f"{topic}: not compacted within 60 s ({len(recs)} records)"
        time.sleep(0.3)


def test_confluent_and_java_read_exactly_the_latest_value_of_each_live_key(cleaning_broker):
    topics = [f"compacted-{codec}" for codec in CODECS]
    for codec, topic in zip(CODECS, topics):
        create_compacted(cleaning_broker, topic)
        produce_versions(cleaning_broker, topic, codec)
    by_confluent = {t: wait_compacted(cleaning_broker, t) for t in topics}
    for t, recs in by_confluent.items():
        assert recs[0][0] > 0, f"{t}: the old versions were compacted away, leaving a gap"

    program = java_program(os.path.join(HERE, "java", "JavaCompactedRead.java"))
    r = subprocess.run(program + ["JavaCompactedRead", cleaning_broker] + topics,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and "java read ok" in r.stdout, r.stdout + r.stderr
    by_java = {t: [] for t in topics}
    for line in r.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            t, o, k, v = parts
            by_java[t].append((int(o), k, None if v == "<null>" else v))
    for t in topics:
        assert keyed_latest(by_java[t]) == EXPECTED, f"{t}: the Java client saw {by_java[t][:5]}..."
        assert by_java[t] == by_confluent[t], f"{t}: both clients read the same records"


def read_isolated(bootstrap, topic, isolation):
    """[(key, value)] of partition 0 up to the end a consumer at `isolation` sees (the LSO for
    read_committed), in offset order."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"txn-compaction-{isolation}",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": isolation})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out, deadline = [], time.time() + 30
        while True:
            assert time.time() < deadline, f"{topic}: no end of partition within 30 s"
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                return out
            out.append((m.key().decode(), None if m.value() is None else m.value().decode()))
    finally:
        c.close()


def test_a_compacted_topic_keeps_the_latest_committed_value_of_each_key_and_nothing_aborted(
        cleaning_broker):
    """Committed and aborted transactions on a compacted topic: once the cleaner has run,
    read_committed and read_uncommitted consumers both see exactly the latest committed value
    of each key, and no record of an aborted transaction."""
    topic = "compacted-txn"
    create_compacted(cleaning_broker, topic)
    p = Producer({"bootstrap.servers": cleaning_broker, "transactional.id": "compacted-txn-id",
                  "linger.ms": 2})
    p.init_transactions(30)
    for v in range(4):
        p.begin_transaction()
        for i in range(50):
            p.produce(topic, key=f"k{i}", value=f"k{i}-c{v}", partition=0)
        p.commit_transaction(30)
        p.begin_transaction()
        for i in range(0, 50, 2):
            p.produce(topic, key=f"k{i}", value=f"k{i}-aborted{v}", partition=0)
        p.flush(30)
        p.abort_transaction(30)
    # Once segment.ms has passed, one record rolls the log: every transaction is cleanable.
    time.sleep(0.4)
    roll = Producer({"bootstrap.servers": cleaning_broker, "acks": "all"})
    roll.produce(topic, key="roll", value="roll", partition=0)
    assert roll.flush(30) == 0
    expected = {f"k{i}": f"k{i}-c3" for i in range(50)}

    def latest(recs):
        keyed = [(k, v) for k, v in recs if k != "roll"]
        return dict(keyed) if len(dict(keyed)) == len(keyed) else None

    deadline = time.time() + 60
    while latest(read_isolated(cleaning_broker, topic, "read_uncommitted")) != expected:
        assert time.time() < deadline, "not compacted within 60 s"
        time.sleep(0.3)
    for isolation in ["read_uncommitted", "read_committed"]:
        recs = read_isolated(cleaning_broker, topic, isolation)
        assert latest(recs) == expected, f"{isolation}: {recs[:5]}..."
        assert not any("aborted" in (v or "") for _, v in recs), isolation
