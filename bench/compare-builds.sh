#!/usr/bin/env bash
# Two builds of chronik-server side by side, alternated so the shared host's speed changes hit
# both alike: a refactor or a patched dependency is judged by the ratio new/old in one session.
# Scenarios (each one produce run per build per pair):
#   single  one node, 1 partition, acks=1, 1 KiB, c=64        (the issue-4 command)
#   shards  one node, --cores 2, 4 partitions over both shards, acks=1, 1 KiB, c=64
#   cluster 3 nodes, RF 3, 3 partitions, acks=all, 1 KiB, c=128 (the issue-7 command)
# Prints every run (throughput, p99, p99.9, max) and per scenario the median ratio new/old.
#
# usage: bench/compare-builds.sh OLD_SERVER NEW_SERVER [pairs] [seconds] [scenarios]
#   (default 3 pairs of 15 s, scenarios "single shards cluster"; the bench client is
#   target/release/chronik-bench, or $CHRONIK_BENCH)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OLD=${1:?old chronik-server binary}
NEW=${2:?new chronik-server binary}
PAIRS=${3:-3}
SECS=${4:-15}
SCENARIOS=${5:-single shards cluster}
BENCH=${CHRONIK_BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/chronik-bench}
[[ -x $OLD && -x $NEW && -x $BENCH ]] || { echo "need executable $OLD, $NEW and $BENCH" >&2; exit 1; }
WORK=$(mktemp -d /tmp/chronik-compare.XXXXXX)
source "$ROOT/bench/lib.sh"
trap cleanup EXIT INT TERM

start_single() { # $1: binary, $2: cores
    local port
    port=$(free_port)
    rm -rf "$WORK/data"
    "$1" --data-dir "$WORK/data" --cores "$2" --no-pin --listen "127.0.0.1:$port" \
        --controller-listen "127.0.0.1:$((port + 1000))" --metrics-listen none \
        >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_serving "$WORK/server.log" || true
    BOOT="127.0.0.1:$port"
}


stop_all() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
    if [[ -n $CLUSTER_DIR ]]; then
        "$ROOT/tests/cluster/stop.sh" "$CLUSTER_DIR" >/dev/null 2>&1 || true
        CLUSTER_DIR=""
    fi
}

run_one() { # $1: scenario, $2: old|new, $3: pair number
    local sc=$1 which=$2 n=$3 bin args attempt
    bin=$OLD
    [[ $which == new ]] && bin=$NEW
    # A run whose node did not come up (a port taken by other work on the shared host between
    # the check and the bind) is tried once more on new ports, its log shown, not fatal.
    for attempt in 1 2; do
        case $sc in
            single) start_single "$bin" 2; args=(-p 1 -r 1 -c 64 --acks 1) ;;
            shards) start_single "$bin" 2; args=(-p 4 -r 1 -c 64 --acks 1) ;;
            cluster) start_cluster "$bin"; args=(-p 3 -r 3 -c 128 --acks all) ;;
            *) echo "unknown scenario $sc" >&2; exit 1 ;;
        esac
        if "$BENCH" --bootstrap-servers "$BOOT" --topic "cmp-$sc" --mode produce --create-topic \
            --message-size 1024 "${args[@]}" --duration "${SECS}s" -w 3s \
            --json-output "$WORK/$sc-$which-$n.json" >/dev/null; then
            break
        fi
        echo "run $sc $which $n (attempt $attempt) failed; server log:" >&2
        tail -n 20 "$WORK/server.log" "$WORK"/cluster/node-*.log 2>/dev/null >&2 || true
        stop_all
        [[ $attempt == 2 ]] && exit 1
    done
    stop_all
    python3 - "$WORK/$sc-$which-$n.json" "$sc" "$which" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:>7} {sys.argv[3]:>3}  {r['msgs_per_sec']:>9.0f} msg/s  p99 {r['latency_p99_ms']:7.2f}"
      f"  p99.9 {r.get('latency_p999_ms', float('nan')):7.2f}  max {r.get('latency_max_ms', float('nan')):8.2f} ms")
PY
}

for sc in $SCENARIOS; do
    for n in $(seq "$PAIRS"); do
        if ((n % 2)); then run_one "$sc" old "$n"; run_one "$sc" new "$n"
        else run_one "$sc" new "$n"; run_one "$sc" old "$n"; fi
    done
done
python3 - "$WORK" "$PAIRS" "$SCENARIOS" <<'PY'
import json, statistics, sys
w, pairs, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
for sc in scenarios:
    tp, p99 = [], []
    for n in range(1, pairs + 1):
        old = json.load(open(f"{w}/{sc}-old-{n}.json")); new = json.load(open(f"{w}/{sc}-new-{n}.json"))
        tp.append(new["msgs_per_sec"] / old["msgs_per_sec"])
        p99.append(new["latency_p99_ms"] / old["latency_p99_ms"])
    print(f"{sc:>7}: throughput new/old {' '.join(f'{x:.3f}' for x in tp)} (median {statistics.median(tp):.3f});"
          f" p99 new/old {' '.join(f'{x:.2f}' for x in p99)} (median {statistics.median(p99):.2f})")
PY
