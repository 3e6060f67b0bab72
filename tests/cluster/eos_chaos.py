#!/usr/bin/env python3
"""Bug hunt for transactions, not part of the suite: the Java consume-transform-produce loop of
tests/interop/test_java_exactly_once.py over N records on a 3-node cluster while K nodes, picked
at random (the transaction coordinator's or any), are SIGKILLed at random moments: restarted at
once, after their leaderships moved, or with a transaction held open. Prints the seed; a
failed run keeps the cluster's logs in $OUT/failed-<seed> (OUT: default /tmp).

    CHRONIK_SERVER_BIN=target/debug/chronik-server N=6000 K=8 [SEED=...] \
        tests/.venv/bin/python tests/cluster/eos_chaos.py
"""
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "interop"))
import test_java_exactly_once as t  # noqa: E402
from test_java_client import java_program, three_node_cluster  # noqa: E402

N = int(os.environ.get("N", "6000"))
K = int(os.environ.get("K", "6"))
seed = int(os.environ.get("SEED", str(random.randrange(1 << 30))))
rnd = random.Random(seed)
out_dir = os.environ.get("OUT", "/tmp")
print("seed", seed, flush=True)
ok = False
with three_node_cluster(t.FAST) as (bootstrap, cluster_dir):
    loop = t.Loop(java_program(t.SOURCE) + ["JavaExactlyOnceLoop", bootstrap, str(N)])
    try:
        loop.wait_for("READY", 120)
        t.wait_healthy(bootstrap)
        step = N // (K + 1)
        for k in range(K):
            loop.tell(f"allow {(k + 2) * step}")
            loop.wait_committed(k * step + rnd.randrange(step // 2, step), 90)
            mode = rnd.choice(["coord-now", "coord-moved", "random-now", "random-moved",
                               "held-coord", "held-random"])
            if mode.startswith("held"):
                loop.tell("hold")
                loop.wait_for("HOLDING", 60)
            coord, state = loop.coordinator()
            node = coord if "coord" in mode else rnd.choice([1, 2, 3])
            print(f"[{time.time():.3f}] kill {k}: {mode} node {node} "
                  f"(coordinator {coord} {state}) at {loop.committed}", flush=True)
            if mode.startswith("held"):
                t.fail_over_held_transaction(loop, bootstrap, cluster_dir, node)
            elif mode.endswith("moved"):
                argv = t.kill(cluster_dir, node)
                t.wait_leaders_moved_off(bootstrap, node)
                time.sleep(rnd.random())
                t.restart(cluster_dir, node, argv)
            else:
                t.restart(cluster_dir, node, t.kill(cluster_dir, node))
            t.wait_healthy(bootstrap, 90)
        loop.tell(f"allow {N}")
        print(loop.wait_for("java eos ok", 200), flush=True)
        ok = loop.proc.wait(timeout=30) == 0
    except BaseException as e:
        print("FAILED", repr(e)[:3000], flush=True)
        kept = os.path.join(out_dir, f"failed-{seed}")
        subprocess.run(["cp", "-r", cluster_dir, kept])
        with open(os.path.join(kept, "loop.log"), "w") as f:
            f.write(loop.log())
    finally:
        if loop.proc.poll() is None:
            loop.proc.kill()
        loop.proc.wait()
print("seed", seed, "OK" if ok else "FAIL", flush=True)
sys.exit(0 if ok else 1)
