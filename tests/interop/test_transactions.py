"""Kafka transactions with confluent-kafka's transactional producer: commit 100, abort 50;
read_committed sees exactly the 100, read_uncommitted all 150; a second producer with the
same transactional.id fences the first."""
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic


def create(bootstrap, name, partitions=3):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        f.result(timeout=15)


def read_all(bootstrap, topic, partitions, isolation, at_least):
    """Every value read before 3 s pass without news once `at_least` arrived (60 s at most)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{isolation}",
                  "enable.auto.commit": False, "isolation.level": isolation})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out, deadline, quiet = [], time.time() + 60, time.time()
    while time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            out.append(m.value().decode())
            quiet = time.time()
        if len(out) >= at_least and time.time() - quiet > 3:
            break
    c.close()
    return out


def txn_producer(bootstrap, tid):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5})
    p.init_transactions(30)
    return p


def test_confluent_commit_100_abort_50(broker):
    create(broker, "py-txn", 3)
    p = txn_producer(broker, "py-txn-id")
    p.begin_transaction()
    for i in range(100):
        p.produce("py-txn", value=f"c{i}", partition=i % 3)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(50):
        p.produce("py-txn", value=f"a{i}", partition=i % 3)
    p.flush(30)
    p.abort_transaction(30)
    committed = read_all(broker, "py-txn", 3, "read_committed", 100)
    assert sorted(committed) == sorted(f"c{i}" for i in range(100))
    assert len(read_all(broker, "py-txn", 3, "read_uncommitted", 150)) == 150


def test_confluent_second_producer_fences_the_first(broker):
    create(broker, "py-fence", 1)
    zombie = txn_producer(broker, "py-fence-id")
    zombie.begin_transaction()
    zombie.produce("py-fence", value="zombie", partition=0)
    zombie.flush(30)
    fresh = txn_producer(broker, "py-fence-id")
    with pytest.raises(KafkaException):
        zombie.commit_transaction(30)
    fresh.begin_transaction()
    fresh.produce("py-fence", value="fresh", partition=0)
    fresh.commit_transaction(30)
    assert read_all(broker, "py-fence", 1, "read_committed", 1) == ["fresh"]
