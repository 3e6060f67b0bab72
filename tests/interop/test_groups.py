"""Consumer groups with confluent-kafka and kafka-python against a real chronik-server."""
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP


def create(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for f in fs.values():
        f.result(timeout=15)


def produce(bootstrap, topic, partitions, per_partition):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for part in range(partitions):
        for i in range(per_partition):
            p.produce(topic, value=f"{part}-{i}".encode(), partition=part)
    assert p.flush(30) == 0


def shared(assignments, n):
    total = sum(len(a) for a in assignments)
    union = set().union(*assignments)
    return total == n and union == set(range(n)) and all(assignments)


def confluent_member(bootstrap, group):
    return Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
    })


def test_confluent_three_members_share_six_partitions_and_hand_over(broker):
    create(broker, "py-share", 6)
    cs = [confluent_member(broker, "py-g-share") for _ in range(3)]
    for c in cs:
        c.subscribe(["py-share"])

    def wait_shared(members, what):
        deadline = time.time() + 60
        while True:
            for c in members:
                c.poll(0.05)
            a = [{tp.partition for tp in c.assignment()} for c in members]
            if shared(a, 6):
                return a
            assert time.time() < deadline, f"{what}: {a}"

    wait_shared(cs, "three members")
    cs.pop().close()  # leaves the group
    wait_shared(cs, "two members after one left")
    for c in cs:
        c.close()


def test_confluent_committed_offsets_resume(broker):
    create(broker, "py-resume", 2)
    produce(broker, "py-resume", 2, 20)
    c = confluent_member(broker, "py-g-resume")
    c.subscribe(["py-resume"])
    seen = 0
    deadline = time.time() + 60
    while seen < 15:
        assert time.time() < deadline
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        seen += 1
        c.commit(message=m, asynchronous=False)
    committed = c.committed([TopicPartition("py-resume", 0), TopicPartition("py-resume", 1)], timeout=10)
    assert sum(max(tp.offset, 0) for tp in committed) == 15
    c.close()
    c = confluent_member(broker, "py-g-resume")
    c.subscribe(["py-resume"])
    got = []
    deadline = time.time() + 60
    while len(got) < 25:
        assert time.time() < deadline, f"resumed {len(got)} of 25"
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        got.append((m.partition(), m.offset()))
    starts = {tp.partition: tp.offset for tp in committed}
    for p in (0, 1):
        offs = [o for (pp, o) in got if pp == p]
        if offs:
            assert min(offs) == max(starts[p], 0)
    c.close()


def test_kafka_python_three_members_share_six_partitions(broker):
    create(broker, "kp-share", 6)
    results = {}
    stop = threading.Event()

    def member(i):
        c = KafkaConsumer(
            "kp-share", bootstrap_servers=broker, group_id="kp-g-share",
            auto_offset_reset="earliest", enable_auto_commit=False,
            session_timeout_ms=10000, heartbeat_interval_ms=500,
        )
        try:
            while not stop.is_set():
                c.poll(timeout_ms=100)
                results[i] = {tp.partition for tp in c.assignment()}
        finally:
            c.close()

    threads = [threading.Thread(target=member, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.time() + 90
    try:
        while True:
            a = [results.get(i, set()) for i in range(3)]
            if shared(a, 6):
                break
            assert time.time() < deadline, f"kafka-python members: {a}"
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)


def test_kafka_python_committed_offsets_resume(broker):
    create(broker, "kp-resume", 1)
    p = KafkaProducer(bootstrap_servers=broker, acks="all")
    for i in range(20):
        p.send("kp-resume", value=f"v{i}".encode(), partition=0)
    p.flush(30)
    p.close()
    c = KafkaConsumer("kp-resume", bootstrap_servers=broker, group_id="kp-g-resume",
                      auto_offset_reset="earliest", enable_auto_commit=False)
    got = []
    deadline = time.time() + 60
    while len(got) < 12:
        assert time.time() < deadline
        for recs in c.poll(timeout_ms=200, max_records=12 - len(got)).values():
            got.extend(r.offset for r in recs)
    c.commit()
    assert c.committed(KTP("kp-resume", 0)) == 12
    c.close()
    c = KafkaConsumer("kp-resume", bootstrap_servers=broker, group_id="kp-g-resume",
                      auto_offset_reset="earliest", enable_auto_commit=False)
    rest = []
    deadline = time.time() + 60
    while len(rest) < 8:
        assert time.time() < deadline, f"resumed {rest}"
        for recs in c.poll(timeout_ms=200).values():
            rest.extend(r.offset for r in recs)
    assert rest == list(range(12, 20))
    c.close()
