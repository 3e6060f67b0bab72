"""confluent-kafka (librdkafka) and kcat over TLS against a real chronik-server: SASL_SSL with
SCRAM-SHA-512 and with PLAIN, SSL with a client certificate whose principal (`User:CN=…`) the ACLs
check, and a plaintext client on a TLS port, which is closed rather than left waiting. Certificates
come from the machine's openssl (tls_setup.py); kcat is Debian's package (tests/interop/prepare)."""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from tls_setup import Node, make_certs


@pytest.fixture(scope="module")
def sasl_ssl_node():
    """SASL_SSL and SSL listeners (no client certificates asked), users from
    --sasl-bootstrap-users."""
    tmp = tempfile.mkdtemp(prefix="chronik-interop-tls-")
    try:
        make_certs(tmp)
        users = os.path.join(tmp, "users.txt")
        with open(users, "w") as f:
            f.write("alice:alice-secret\n")
        node = Node(tmp, ["SASL_SSL", "SSL"], "--sasl-bootstrap-users", users)
        try:
            yield node
        finally:
            node.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def mtls_node():
    """An SSL listener that requires a client certificate from the test CA, with the authorizer
    on; the anonymous PLAINTEXT client is the super user that creates topics and ACLs."""
    tmp = tempfile.mkdtemp(prefix="chronik-interop-mtls-")
    try:
        make_certs(tmp, clients=["app", "stranger"])
        node = Node(tmp, ["SSL"], "--ssl-ca-file", os.path.join(tmp, "ca.pem"),
                    "--ssl-client-auth", "required", "--authorizer-enable",
                    "--super-users", "User:ANONYMOUS")
        try:
            yield node
        finally:
            node.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sasl_ssl_config(node, mechanism, user="alice", password="alice-secret"):
    return {
        "bootstrap.servers": node.addr("SASL_SSL"),
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": os.path.join(node.tmp, "ca.pem"),
    }


def mtls_config(node, client):
    return {
        "bootstrap.servers": node.addr("SSL"),
        "security.protocol": "SSL",
        "ssl.ca.location": os.path.join(node.tmp, "ca.pem"),
        "ssl.certificate.location": os.path.join(node.tmp, f"{client}.pem"),
        "ssl.key.location": os.path.join(node.tmp, f"{client}.key"),
    }


def produce(config, topic, n):
    """Produces n records to partition 0; returns the delivery errors (None for each success)."""
    results = []
    p = Producer({**config, "acks": "1", "message.timeout.ms": 10000})
    for i in range(n):
        p.produce(topic, value=f"v{i}".encode(), partition=0,
                  on_delivery=lambda err, _msg: results.append(err))
    p.flush(20)
    assert len(results) == n, f"{len(results)} of {n} delivery reports"
    return results


def consume(config, topic, n):
    """Reads n values from partition 0 from its beginning (no group offsets involved)."""
    c = Consumer({**config, "group.id": f"g-{topic}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = []
    deadline = time.time() + 20
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value().decode())
    c.close()
    return got


def roundtrip(config, topic, n=200):
    assert produce(config, topic, n) == [None] * n
    assert consume(config, topic, n) == [f"v{i}" for i in range(n)]


def test_confluent_kafka_produces_and_consumes_over_sasl_ssl_with_scram_sha_512(sasl_ssl_node):
    roundtrip(sasl_ssl_config(sasl_ssl_node, "SCRAM-SHA-512"), "ck-sasl-ssl-scram512")


def test_confluent_kafka_produces_and_consumes_over_sasl_ssl_with_plain(sasl_ssl_node):
    roundtrip(sasl_ssl_config(sasl_ssl_node, "PLAIN"), "ck-sasl-ssl-plain")


def test_confluent_kafka_with_a_wrong_password_over_sasl_ssl_gets_an_authentication_error(sasl_ssl_node):
    errors = []
    p = Producer({**sasl_ssl_config(sasl_ssl_node, "SCRAM-SHA-512", password="wrong"),
                  "error_cb": errors.append})
    deadline = time.time() + 10
    while not errors and time.time() < deadline:
        p.poll(0.2)
    assert errors and errors[0].code() == KafkaError._AUTHENTICATION, errors


def test_a_plaintext_client_on_a_tls_port_is_closed_not_left_waiting(sasl_ssl_node):
    # A Kafka ApiVersions v0 request in plaintext: not a TLS record, so the broker answers with
    # a TLS alert (record type 21) or nothing, and closes.
    body = struct.pack(">hhih", 18, 0, 1, 4) + b"test"
    for name in ["SSL", "SASL_SSL"]:
        with socket.create_connection(("127.0.0.1", sasl_ssl_node.port[name]), timeout=5) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            received = b""
            start = time.time()
            while True:
                chunk = s.recv(4096)  # a hung broker raises socket.timeout here
                if not chunk:
                    break
                received += chunk
            assert time.time() - start < 5
            assert received == b"" or received[0] == 21, (name, received[:16])


def let_app_write_and_read(node, topic):
    """Creates `topic` as the PLAINTEXT listener's super user and lets `User:CN=app` (the client
    certificate's principal) write and read it."""
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{node.port['PLAINTEXT']}"})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=20)
    bindings = [AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:CN=app",
                           "*", op, AclPermissionType.ALLOW)
                for op in (AclOperation.WRITE, AclOperation.READ)]
    for f in admin.create_acls(bindings).values():
        f.result(timeout=20)


def test_an_mtls_client_is_authorized_by_its_certificates_common_name(mtls_node):
    topic = "ck-mtls"
    let_app_write_and_read(mtls_node, topic)
    roundtrip(mtls_config(mtls_node, "app"), topic)
    # Another certificate from the same CA is let in by TLS, but its principal has no ACL.
    errors = produce(mtls_config(mtls_node, "stranger"), topic, 1)
    assert errors[0] is not None and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errors


def test_an_ssl_listener_with_client_auth_required_closes_a_client_without_a_certificate(mtls_node):
    errors = []
    config = mtls_config(mtls_node, "app")
    del config["ssl.certificate.location"], config["ssl.key.location"]
    p = Producer({**config, "error_cb": errors.append})
    deadline = time.time() + 10
    while not errors and time.time() < deadline:
        p.poll(0.2)
    assert errors and errors[0].code() in (KafkaError._SSL, KafkaError._TRANSPORT,
                                           KafkaError._ALL_BROKERS_DOWN), errors


def kcat(config, *args, stdin=None):
    """Runs Debian's kcat with the client settings as -X options; returns (exit code, stdout,
    stderr)."""
    binary = shutil.which("kcat") or shutil.which("kafkacat")
    if binary is None:
        pytest.fail("kcat is not installed (tests/interop/prepare installs Debian's package)")
    cmd = [binary, "-b", config["bootstrap.servers"]]
    for k, v in config.items():
        if k != "bootstrap.servers":
            cmd += ["-X", f"{k}={v}"]
    done = subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True,
                          timeout=60)
    return done.returncode, done.stdout, done.stderr


def kcat_roundtrip(config, topic, n=100):
    lines = "".join(f"k{i}\n" for i in range(n))
    code, _, err = kcat(config, "-P", "-t", topic, "-p", "0", "-X", "topic.request.required.acks=all",
                        stdin=lines)
    assert code == 0, err
    code, out, err = kcat(config, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e",
                          "-c", str(n), "-f", "%s\n")
    assert code == 0, err
    assert out.splitlines() == [f"k{i}" for i in range(n)], err


def test_kcat_produces_and_consumes_over_sasl_ssl_with_scram_sha_512_and_with_plain(sasl_ssl_node):
    kcat_roundtrip(sasl_ssl_config(sasl_ssl_node, "SCRAM-SHA-512"), "kcat-sasl-ssl-scram512")
    kcat_roundtrip(sasl_ssl_config(sasl_ssl_node, "PLAIN"), "kcat-sasl-ssl-plain")
    # Metadata over the same listener names the TLS port, so kcat stays on it.
    code, out, err = kcat(sasl_ssl_config(sasl_ssl_node, "SCRAM-SHA-512"), "-L", "-t",
                          "kcat-sasl-ssl-plain")
    assert code == 0, err
    assert f"127.0.0.1:{sasl_ssl_node.port['SASL_SSL']}" in out, out


def test_kcat_with_a_wrong_password_is_refused_with_an_authentication_error(sasl_ssl_node):
    code, _, err = kcat(sasl_ssl_config(sasl_ssl_node, "SCRAM-SHA-512", password="wrong"), "-L",
                        "-m", "5")
    assert code != 0
    assert "Authentication failed" in err or "SASL authentication error" in err, err


def test_kcat_with_a_client_certificate_gets_what_the_acls_give_its_common_name(mtls_node):
    topic = "kcat-mtls"
    let_app_write_and_read(mtls_node, topic)
    kcat_roundtrip(mtls_config(mtls_node, "app"), topic)
    code, out, err = kcat(mtls_config(mtls_node, "stranger"), "-C", "-t", topic, "-p", "0",
                          "-o", "beginning", "-e", "-c", "1")
    assert out == ""
    assert code != 0 and "authoriz" in err.lower(), (code, err)
