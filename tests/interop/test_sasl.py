"""kafka-python over SASL_PLAINTEXT with SCRAM-SHA-256 against a real chronik-server."""
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError


def sasl(bootstrap, user, password):
    return dict(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=user,
                sasl_plain_password=password)


def test_kafka_python_produces_and_consumes_over_sasl_plaintext_with_scram_sha_256(sasl_broker):
    p = KafkaProducer(acks="all", **sasl(sasl_broker, "alice", "alice-secret"))
    for i in range(100):
        p.send("kp-sasl", value=f"v{i}".encode(), partition=0).get(timeout=20)
    p.close()
    c = KafkaConsumer(enable_auto_commit=False, consumer_timeout_ms=10000,
                      **sasl(sasl_broker, "alice", "alice-secret"))
    tp = TopicPartition("kp-sasl", 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = [m.value.decode() for m in c][:100]
    c.close()
    assert got == [f"v{i}" for i in range(100)]


def test_kafka_python_with_a_wrong_password_cannot_produce(sasl_broker):
    # The broker answers SASL_AUTHENTICATION_FAILED and closes; the client never gets metadata.
    p = KafkaProducer(request_timeout_ms=5000, max_block_ms=5000,
                      **sasl(sasl_broker, "alice", "wrong"))
    with pytest.raises(KafkaError):
        p.send("never", value=b"x").get(timeout=10)
    p.close(timeout=1)
