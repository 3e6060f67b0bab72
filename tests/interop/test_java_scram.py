"""Apache Kafka's Java client (kafka-clients 4.3.0), SASL/SCRAM and ACLs: tests/interop/java/JavaScram.java
creates a user with Admin alterUserScramCredentials, describes it, gives it ACLs with createAcls
and lists them with describeAcls, then produces and consumes as that user with SCRAM-SHA-512 over
SASL_SSL; after deleteAcls takes WRITE away, its next send is refused. Certificates come from the machine's openssl; jars
from test_java_client.py."""
import os
import shutil
import subprocess
import tempfile

import pytest
from conftest import free_port, server_binary, wait_ready
from test_java_client import HERE, java_program

SOURCE = os.path.join(HERE, "java", "JavaScram.java")


def make_certs(d):
    """A CA and a server certificate for 127.0.0.1 / localhost, as PEM files in `d`."""
    if not shutil.which("openssl"):
        pytest.skip("no openssl on this machine")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=chronik test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")


def test_java_admin_creates_a_scram_user_and_its_acls_then_it_produces_and_consumes_over_sasl_ssl():
    tmp = tempfile.mkdtemp(prefix="chronik-java-scram-")
    make_certs(tmp)
    port, ssl_port, cport = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [server_binary(), "--listeners",
         f"PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{ssl_port}",
         "--inter-broker-listener-name", "PLAINTEXT",
         "--ssl-cert-file", os.path.join(tmp, "server.pem"),
         "--ssl-key-file", os.path.join(tmp, "server.key"),
         "--controller-listen", f"127.0.0.1:{cport}", "--data-dir", os.path.join(tmp, "data"),
         "--no-pin", "--cores", "2", "--metrics-listen", "none",
         "--authorizer-enable", "--super-users", "User:ANONYMOUS"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, proc)
        r = subprocess.run(
            java_program(SOURCE) + ["JavaScram", f"127.0.0.1:{port}", f"localhost:{ssl_port}",
                                    os.path.join(tmp, "ca.pem")],
            capture_output=True, text=True, timeout=240,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "java scram ok: kafka-clients 4.3.0" in r.stdout, r.stdout + r.stderr
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
