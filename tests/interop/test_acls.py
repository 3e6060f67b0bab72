"""ACLs through kafka-python's admin client: create_acls, describe_acls (with filters) and
delete_acls against a broker with the authorizer on, and SECURITY_DISABLED with it off."""
import os
import subprocess
import tempfile

import pytest
from kafka import KafkaAdminClient
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.errors import SecurityDisabledError

from conftest import free_port, server_binary, wait_ready


def start(*flags):
    tmp = tempfile.mkdtemp(prefix="chronik-acl-")
    port, cport = free_port(), free_port()
    proc = subprocess.Popen(
        [server_binary(), "--listen", f"127.0.0.1:{port}", "--controller-listen",
         f"127.0.0.1:{cport}", "--data-dir", os.path.join(tmp, "data"), "--no-pin",
         "--cores", "2", "--metrics-listen", "none", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_ready(port, proc)
    return proc, tmp, f"127.0.0.1:{port}"


@pytest.fixture
def secured():
    # The test client is anonymous (plaintext): make it the super user that manages ACLs.
    proc, tmp, bootstrap = start("--authorizer-enable", "--super-users", "User:ANONYMOUS")
    try:
        yield bootstrap
    finally:
        proc.kill()
        proc.wait()
        subprocess.run(["rm", "-rf", tmp])


@pytest.fixture
def open_broker():
    proc, tmp, bootstrap = start()
    try:
        yield bootstrap
    finally:
        proc.kill()
        proc.wait()
        subprocess.run(["rm", "-rf", tmp])


def acl(principal, name, pattern, op, perm):
    return ACL(
        principal=principal,
        host="*",
        operation=op,
        permission_type=perm,
        resource_pattern=ResourcePattern(ResourceType.TOPIC, name, pattern),
    )


def topic_filter(principal=None, name=None, pattern=ACLResourcePatternType.ANY,
                 perm=ACLPermissionType.ANY):
    return ACLFilter(
        principal=principal,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=perm,
        resource_pattern=ResourcePatternFilter(ResourceType.TOPIC, name, pattern),
    )


def test_kafka_python_creates_describes_and_deletes_acls(secured):
    admin = KafkaAdminClient(bootstrap_servers=secured, request_timeout_ms=30000)
    try:
        wanted = [
            acl("User:alice", "orders", ACLResourcePatternType.LITERAL,
                ACLOperation.WRITE, ACLPermissionType.ALLOW),
            acl("User:alice", "logs-", ACLResourcePatternType.PREFIXED,
                ACLOperation.READ, ACLPermissionType.ALLOW),
            acl("User:bob", "orders", ACLResourcePatternType.LITERAL,
                ACLOperation.ALL, ACLPermissionType.DENY),
        ]
        result = admin.create_acls(wanted)
        assert len(result["succeeded"]) == 3, result
        assert result["failed"] == []

        acls, _ = admin.describe_acls(topic_filter())
        assert len(acls) == 3
        alices, _ = admin.describe_acls(topic_filter(principal="User:alice"))
        assert sorted(a.resource_pattern.resource_name for a in alices) == ["logs-", "orders"]
        matching, _ = admin.describe_acls(
            topic_filter(name="logs-2024", pattern=ACLResourcePatternType.MATCH))
        assert [(a.principal, a.operation) for a in matching] == [("User:alice", ACLOperation.READ)]

        deleted = admin.delete_acls([topic_filter(perm=ACLPermissionType.DENY)])
        assert len(deleted) == 1
        _filter, removed, error = deleted[0]
        assert error.errno == 0
        assert [(a.principal, a.permission_type) for a, _ in removed] == [
            ("User:bob", ACLPermissionType.DENY)]
        acls, _ = admin.describe_acls(topic_filter())
        assert len(acls) == 2
    finally:
        admin.close()


def test_kafka_python_describe_acls_without_an_authorizer_is_security_disabled(open_broker):
    admin = KafkaAdminClient(bootstrap_servers=open_broker, request_timeout_ms=30000)
    try:
        with pytest.raises(SecurityDisabledError):
            admin.describe_acls(topic_filter())
    finally:
        admin.close()
