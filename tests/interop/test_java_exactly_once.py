"""Exactly-once processing through broker failures with Apache Kafka's Java client
(kafka-clients 4.3.0): tests/interop/java/JavaExactlyOnceLoop.java runs a consume-transform-produce
loop (one transaction per poll, offsets with sendOffsetsToTransaction) on a 3-node cluster while
this test SIGKILLs and restarts the broker of the loop's transaction coordinator and then the
leader of an output partition, each while a transaction is open with its records written, and
then the coordinator's broker again at a random point of the running loop. At the end the
program reads the output with read_committed: every input record exactly once, nothing else.
Jars and cluster come from test_java_client.py."""
import os
import queue
import signal
import subprocess
import threading
import time

from confluent_kafka.admin import AdminClient
from test_java_client import HERE, java_program, three_node_cluster

SOURCE = os.path.join(HERE, "java", "JavaExactlyOnceLoop.java")
RECORDS = 2000
# Short broker sessions so that a killed node loses its leaderships within seconds.
FAST = ("--broker-session-timeout-ms 1500 --broker-heartbeat-interval-ms 200 "
        "--replica-lag-time-max-ms 4000")
TOPICS = ("eos-in", "eos-out", "__transaction_state", "__consumer_offsets")


class Loop:
    """The Java program: its stdout lines in a queue, commands on its stdin."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines = queue.Queue()
        self.out = []
        self.err = []
        self.committed = 0
        threading.Thread(target=self._read, args=(self.proc.stdout, self.out, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err, False), daemon=True).start()

    def _read(self, stream, keep, parse):
        for line in stream:
            keep.append(line)
            if parse:
                if line.startswith("COMMITTED "):
                    self.committed = int(line.split()[1])
                self.lines.put(line.strip())

    def tell(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def log(self):
        return "".join(self.out) + "".join(self.err)

    def wait_for(self, prefix, timeout):
        """The next stdout line starting with `prefix`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, min(1.0, deadline - time.time())))
            except queue.Empty:
                assert self.proc.poll() is None, f"the loop exited early:\n{self.log()}"
                continue
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line within {timeout} s:\n{self.log()}")

    def wait_committed(self, records, timeout):
        deadline = time.time() + timeout
        while self.committed < records:
            assert self.proc.poll() is None, f"the loop exited early:\n{self.log()}"
            assert time.time() < deadline, (
                f"{self.committed} of {records} records committed after {timeout} s:\n{self.log()}")
            time.sleep(0.02)

    def coordinator(self):
        """(node id, state) of the loop's transactional id, from DescribeTransactions."""
        self.tell("coordinator")
        line = self.wait_for("COORDINATOR", 60)
        words = line.split()
        assert len(words) == 3 and words[1].isdigit(), line
        return int(words[1]), words[2]


def wait_healthy(bootstrap, timeout=60):
    """Until all three brokers are in the metadata and every partition of the loop's topics has a
    leader and three in-sync replicas."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            md = admin.list_topics(timeout=5)
            last = {t: {p.id: (p.leader, sorted(p.isrs)) for p in md.topics[t].partitions.values()}
                    for t in TOPICS if t in md.topics}
            if len(md.brokers) == 3 and len(last) == len(TOPICS) and all(
                    leader >= 0 and len(isr) == 3 for parts in last.values()
                    for leader, isr in parts.values()):
                return md
        except Exception as e:  # a broker down or starting: ask again
            last = e
        time.sleep(0.2)
    raise AssertionError(f"the cluster is not healthy after {timeout} s: {last}")


def kill(cluster_dir, node):
    """SIGKILLs node `node` of start.sh's cluster; returns its command line for `restart`."""
    pid = int(open(os.path.join(cluster_dir, f"node-{node}.pid")).read())
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0") if a]
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break  # dead; its parent (not us) has yet to reap it
        except OSError:
            break
        time.sleep(0.05)
    return argv


def restart(cluster_dir, node, argv):
    """Starts node `node` again with the command line it had (same data dir, ports and flags);
    its pid file then names the new process for stop.sh. Started in the background of a shell,
    as start.sh does, so that the node is not this process's child: stop.sh's `kill -0` must
    not find it a zombie waiting for us."""
    log = os.path.join(cluster_dir, f"node-{node}.log")
    out = subprocess.run(["sh", "-c", 'exec "$@" >>"$LOG" 2>&1 </dev/null & echo $!', "sh"] + argv,
                         env=dict(os.environ, LOG=log), capture_output=True, text=True, check=True,
                         timeout=30)
    with open(os.path.join(cluster_dir, f"node-{node}.pid"), "w") as f:
        f.write(out.stdout.strip() + "\n")


def wait_leaders_moved_off(bootstrap, node, timeout=30):
    """Until no partition of the loop's topics is led by the killed `node`."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.time() + timeout
    led = None
    while time.time() < deadline:
        try:
            md = admin.list_topics(timeout=5)
            led = [(t, p.id) for t in TOPICS if t in md.topics
                   for p in md.topics[t].partitions.values() if p.leader == node]
            if not led:
                return
        except Exception as e:  # asked a dead broker: ask again
            led = e
        time.sleep(0.1)
    raise AssertionError(f"node {node} still leads {led} {timeout} s after its SIGKILL")


def fail_over_held_transaction(loop, bootstrap, cluster_dir, node):
    """With the loop's transaction held open, SIGKILLs `node`, lets the transaction go on
    without it (through the new coordinator and leaders), then restarts it."""
    before = loop.committed
    argv = kill(cluster_dir, node)
    wait_leaders_moved_off(bootstrap, node)
    loop.tell("release")
    loop.wait_committed(before + 1, 60)
    restart(cluster_dir, node, argv)


def test_a_transactional_loop_keeps_exactly_once_through_coordinator_and_leader_kills():
    with three_node_cluster(FAST) as (bootstrap, cluster_dir):
        loop = Loop(java_program(SOURCE) + ["JavaExactlyOnceLoop", bootstrap, str(RECORDS)])
        try:
            loop.wait_for("READY", 120)
            wait_healthy(bootstrap)
            loop.tell(f"allow {RECORDS // 2}")
            loop.wait_committed(RECORDS // 8, 60)

            # The coordinator's broker dies while a transaction is open, its records written to
            # OUT; the transaction commits through the new coordinator.
            loop.tell("hold")
            loop.wait_for("HOLDING", 60)
            coordinator, state = loop.coordinator()
            assert state == "Ongoing", state
            fail_over_held_transaction(loop, bootstrap, cluster_dir, coordinator)
            loop.wait_committed(RECORDS // 2, 90)
            wait_healthy(bootstrap)

            # The leader of an output partition (not the coordinator's broker) dies while a
            # transaction has written to it: its markers go to the new leader.
            loop.tell("hold")
            loop.tell(f"allow {RECORDS * 3 // 4}")
            loop.wait_for("HOLDING", 60)
            coordinator, _ = loop.coordinator()
            md = AdminClient({"bootstrap.servers": bootstrap}).list_topics("eos-out", timeout=10)
            leaders = {p.leader for p in md.topics["eos-out"].partitions.values()}
            others = leaders - {coordinator}
            victim = min(others) if others else coordinator  # it leads them all: still a leader
            fail_over_held_transaction(loop, bootstrap, cluster_dir, victim)
            loop.wait_committed(RECORDS * 3 // 4, 90)
            wait_healthy(bootstrap)

            # The coordinator's broker again, now at whatever point the running loop is: in a
            # commit, between transactions or adding partitions. Restarted at once.
            coordinator, _ = loop.coordinator()
            loop.tell(f"allow {RECORDS}")
            loop.wait_committed(RECORDS * 3 // 4 + 100, 60)
            restart(cluster_dir, coordinator, kill(cluster_dir, coordinator))

            loop.wait_for("java eos ok", 150)
            assert loop.proc.wait(timeout=30) == 0, loop.log()
            print(loop.log())
        finally:
            if loop.proc.poll() is None:
                loop.proc.kill()
            loop.proc.wait()
