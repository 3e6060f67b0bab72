#!/usr/bin/env bash
# The cost of transactions (issue 20's benchmark): the same produce run with and without
# --transactional (a commit every SIZE records), alternated so the shared host's speed changes
# hit both alike, each against a fresh one-node broker (--cores 2). Both runs use the batch
# producer model, which the transactional tasks follow (each builds and sends its own batches).
# Prints every run, the commit latency of the transactional ones, and the median ratio txn/plain.
#
# usage: bench/transaction-cost.sh [pairs] [seconds] [size] [concurrency]
#        (default 3 pairs of 15 s, 100 records per transaction, 16 tasks; release binaries)
#        BACKOFF=ms: the transactional tasks' --transaction-retry-backoff-ms (default 5)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
PAIRS=${1:-3}
SECS=${2:-15}
SIZE=${3:-100}
CONC=${4:-16}
WORK=$(mktemp -d /tmp/chronik-txncost.XXXXXX)
trap cleanup EXIT INT TERM

run_one() { # $1: txn|plain, $2: run number
    local mode=$1 n=$2 extra=() attempt
    [[ $mode == txn ]] && extra=(--transactional --transaction-size "$SIZE" --transaction-retry-backoff-ms "${BACKOFF:-5}")
    # Up to 3 attempts: other test runs share the host and may take the port between our check
    # and the broker's bind.
    for attempt in 1 2 3; do
        rm -rf "$WORK/data" "$WORK/$mode-$n.json"
        for _ in $(seq 100); do # a free pair below the ephemeral range
            PORT=$((20000 + RANDOM % 10000))
            port_free "$PORT" && port_free $((PORT + 1)) && break
        done
        "$BIN/chronik-server" --data-dir "$WORK/data" --cores 2 \
            --listen "127.0.0.1:$PORT" --controller-listen "127.0.0.1:$((PORT + 1))" --metrics-listen none \
            >"$WORK/server.log" 2>&1 &
        SERVER_PID=$!
        if wait_serving "$WORK/server.log"; then
            "$BIN/chronik-bench" --bootstrap-servers "127.0.0.1:$PORT" --topic t --mode produce \
                --partitions 2 --concurrency "$CONC" --message-size 1024 --duration "${SECS}s" \
                --warmup-duration 2s --acks all --producer-model batch --create-topic "${extra[@]}" \
                --json-output "$WORK/$mode-$n.json" >"$WORK/$mode-$n.txt" || true
        fi
        stop_server
        [[ -s "$WORK/$mode-$n.json" ]] && break
        echo "  ($mode run $n attempt $attempt: no report; server log tail:)"; tail -3 "$WORK/server.log"
    done
    print_run "$WORK/$mode-$n.json" "$mode"
    grep -E "transactions|waited|errors|stored|result|CONCURRENT|CLIENT" "$WORK/$mode-$n.txt" | sed 's/^/         /'
}

alternate_pairs plain txn
python3 - "$WORK" "$PAIRS" <<'PY'
import json, statistics, sys
w, pairs = sys.argv[1], int(sys.argv[2])
tp, p50, p99, mw = [], [], [], []
for n in range(1, pairs + 1):
    t = json.load(open(f"{w}/txn-{n}.json")); p = json.load(open(f"{w}/plain-{n}.json"))
    tp.append(t["msgs_per_sec"] / p["msgs_per_sec"])
    p50.append(t["commit_latency_p50_ms"]); p99.append(t["commit_latency_p99_ms"])
    mw.append((t["marker_wait_p50_ms"], t["marker_wait_p99_ms"]))
print(f"throughput txn/plain per pair: {' '.join(f'{x:.3f}' for x in tp)}; median {statistics.median(tp):.3f}")
print(f"next transaction waited for markers p50/p99 per run: {' '.join(f'{a:.2f}/{b:.2f}' for a, b in mw)} ms")
print(f"commit (EndTxn) latency p50 per run: {' '.join(f'{x:.2f}' for x in p50)} ms; p99: {' '.join(f'{x:.2f}' for x in p99)} ms")
PY
