"""For the TLS interop tests: certificates from the machine's openssl (a CA, a server certificate
for 127.0.0.1 / localhost and, if asked, client certificates with subject `/CN=<name>` signed by
the same CA), and a node with TLS listeners."""
import os
import shutil
import subprocess

import pytest

from conftest import free_port, server_binary, wait_ready


def make_certs(d, clients=()):
    """PEM files in `d`: ca.pem/ca.key, server.pem/server.key and <name>.pem/<name>.key for each
    client name."""
    if not shutil.which("openssl"):
        pytest.skip("no openssl on this machine")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    # EC P-256 keys: made in milliseconds (RSA 2048 takes a while on a busy machine).
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=chronik test CA")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for name, cn, ext in [("server", "localhost", "server.ext")] + [(c, c, "client.ext") for c in clients]:
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext)


class Node:
    """One 2-shard chronik-server with a PLAINTEXT listener (readiness, admin) beside the listed
    TLS ones; `port[name]` is each listener's port."""

    def __init__(self, tmp, listeners, *flags):
        self.tmp = tmp
        self.port = {name: free_port() for name in ["PLAINTEXT", *listeners]}
        spec = ",".join(f"{n}://127.0.0.1:{p}" for n, p in self.port.items())
        self.log = open(os.path.join(tmp, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [server_binary(), "--listeners", spec, "--inter-broker-listener-name", "PLAINTEXT",
             "--ssl-cert-file", os.path.join(tmp, "server.pem"),
             "--ssl-key-file", os.path.join(tmp, "server.key"),
             "--controller-listen", f"127.0.0.1:{free_port()}",
             "--data-dir", os.path.join(tmp, "data"), "--no-pin", "--cores", "2",
             "--metrics-listen", "none", *flags],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        try:
            wait_ready(self.port["PLAINTEXT"], self.proc)
        except Exception as e:
            self.stop()
            with open(os.path.join(tmp, "server.log"), errors="replace") as f:
                raise RuntimeError(f"{e}; its log ends:\n{f.read()[-2000:]}") from e

    def addr(self, name):
        # `localhost`: the server certificate names it, and librdkafka checks the host name.
        return f"localhost:{self.port[name]}"

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
