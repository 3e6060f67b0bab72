#!/usr/bin/env python3
"""Measures the time from SIGKILL of a partition leader to the first acks=all produce that
succeeds on that partition afterwards (3-node cluster from start.sh, session timeout 1 s).

    tests/.venv/bin/python tests/cluster/failover_time.py [ROUNDS]
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
results = []
for r in range(rounds):
    d = tempfile.mkdtemp(prefix="chronik-failover-")
    base = 21000 + r * 10
    env = dict(os.environ, CHRONIK_BASE_PORT=str(base), CHRONIK_CONTROLLER_BASE_PORT=str(base + 5),
               CHRONIK_CLUSTER_DIR=d,
               CHRONIK_ARGS="--broker-session-timeout-ms 1000 --broker-heartbeat-interval-ms 200")
    boot = subprocess.check_output([f"{ROOT}/tests/cluster/start.sh", "3"], env=env, text=True).strip()
    try:
        admin = AdminClient({"bootstrap.servers": boot})
        deadline = time.time() + 30
        while len(admin.list_topics(timeout=5).brokers) < 3 and time.time() < deadline:
            time.sleep(0.1)
        for f in admin.create_topics([NewTopic("fo", 1, 3)]).values():
            f.result(15)
        leader = admin.list_topics("fo", timeout=5).topics["fo"].partitions[0].leader
        ok = []
        p = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 0,
                      "enable.idempotence": True, "message.timeout.ms": 30000,
                      "retry.backoff.ms": 20, "retry.backoff.max.ms": 50,
                      "topic.metadata.refresh.interval.ms": 250})
        cb = lambda err, msg: ok.append(time.monotonic()) if err is None else None
        for _ in range(50):
            p.produce("fo", b"warm", partition=0, on_delivery=cb)
        p.flush(10)
        pid = int(open(f"{d}/node-{leader}.pid").read())
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        ok.clear()
        while not ok and time.monotonic() - t_kill < 30:
            p.produce("fo", b"x", partition=0, on_delivery=cb)
            p.poll(0.005)
        p.flush(30)
        took = (min(ok) - t_kill) * 1000 if ok else float("inf")
        results.append(took)
        print(f"round {r + 1}: leader {leader} killed, first acks=all success after {took:.0f} ms", flush=True)
    finally:
        subprocess.run([f"{ROOT}/tests/cluster/stop.sh", d])
        subprocess.run(["rm", "-rf", d])
results.sort()
print(f"median {results[len(results) // 2]:.0f} ms, max {results[-1]:.0f} ms over {len(results)} rounds "
      f"(goal: < 2 x broker.session.timeout.ms = 2000 ms)")
