"""confluent-kafka and kafka-python against a real chronik-server."""
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP
from kafka.admin import NewTopic as KNewTopic


def create(bootstrap, name, partitions=3):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for f in fs.values():
        f.result(timeout=15)


def consume_all(bootstrap, topic, partitions, expected):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out = []
    deadline = time.time() + 30
    while len(out) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        out.append(m)
    c.close()
    return out


def test_confluent_keyed_messages_with_headers_in_order(broker):
    create(broker, "ck", 3)
    p = Producer({"bootstrap.servers": broker, "acks": "all", "linger.ms": 5})
    acked = []
    for i in range(3000):
        p.produce("ck", key=f"k{i % 13}", value=f"v{i}", partition=i % 3,
                  headers=[("n", str(i).encode())],
                  on_delivery=lambda err, msg: acked.append(err))
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    assert len(acked) == 3000 and all(e is None for e in acked)
    got = consume_all(broker, "ck", 3, 3000)
    assert len(got) == 3000
    for part in range(3):
        vals = [int(m.value()[1:]) for m in got if m.partition() == part]
        assert vals == sorted(vals) and len(vals) == 1000
        offs = [m.offset() for m in got if m.partition() == part]
        assert offs == list(range(1000))
    assert all(m.headers()[0][0] == "n" for m in got)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_confluent_compression(broker, codec):
    topic = f"cc-{codec}"
    create(broker, topic, 1)
    p = Producer({"bootstrap.servers": broker, "compression.type": codec, "linger.ms": 20})
    for i in range(1000):
        p.produce(topic, value=(f"{i}:" + "y" * 200).encode(), partition=0)
    assert p.flush(30) == 0
    got = consume_all(broker, topic, 1, 1000)
    assert [int(m.value().split(b":")[0]) for m in got] == list(range(1000))


def test_confluent_idempotent_no_duplicates(broker):
    create(broker, "cidem", 1)
    p = Producer({"bootstrap.servers": broker, "enable.idempotence": True, "linger.ms": 1})
    for i in range(3000):
        p.produce("cidem", value=str(i).encode(), partition=0)
        if i % 200 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    got = consume_all(broker, "cidem", 1, 3000)
    assert [int(m.value()) for m in got] == list(range(3000))


def test_confluent_delete_topic_and_auto_create(broker):
    p = Producer({"bootstrap.servers": broker})
    p.produce("auto-py", value=b"x")
    assert p.flush(30) == 0
    admin = AdminClient({"bootstrap.servers": broker})
    assert "auto-py" in admin.list_topics(timeout=10).topics
    for f in admin.delete_topics(["auto-py"]).values():
        f.result(timeout=15)
    md = admin.list_topics(timeout=10)
    assert "auto-py" not in md.topics


def test_kafka_python_produce_consume_and_offsets(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker)
    admin.create_topics([KNewTopic("kp", num_partitions=3, replication_factor=1)])
    prod = KafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=5)
    futures = [prod.send("kp", key=f"k{i}".encode(), value=f"v{i}".encode(),
                         partition=i % 3, headers=[("h", b"1")]) for i in range(1500)]
    prod.flush(30)
    metas = [f.get(timeout=30) for f in futures]
    assert all(m.offset >= 0 for m in metas)
    cons = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False,
                         consumer_timeout_ms=10000, auto_offset_reset="earliest")
    tps = [KTP("kp", p) for p in range(3)]
    cons.assign(tps)
    cons.seek_to_beginning(*tps)
    got = []
    for m in cons:
        got.append(m)
        if len(got) == 1500:
            break
    assert len(got) == 1500
    end = cons.end_offsets(tps)
    assert sum(end.values()) == 1500
    beg = cons.beginning_offsets(tps)
    assert all(v == 0 for v in beg.values())
    cons.close()
    prod.close()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_compression(broker, codec):
    prod = KafkaProducer(bootstrap_servers=broker, compression_type=codec, linger_ms=10)
    for i in range(300):
        prod.send(f"kpc-{codec}", value=f"{i}".encode(), partition=0)
    prod.flush(30)
    cons = KafkaConsumer(bootstrap_servers=broker, consumer_timeout_ms=10000)
    tp = KTP(f"kpc-{codec}", 0)
    cons.assign([tp])
    cons.seek_to_beginning(tp)
    vals = []
    for m in cons:
        vals.append(int(m.value))
        if len(vals) == 300:
            break
    assert vals == list(range(300))
