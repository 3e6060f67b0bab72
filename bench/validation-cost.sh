#!/usr/bin/env bash
# The cost of record-batch validation on produce (issue 18, item 4): the same produce run against a
# broker with validation (the default) and one with the benchmark knob
# CHRONIK_BENCH_SKIP_RECORD_VALIDATION=1 (frame and CRC only), alternated so the shared host's
# speed changes hit both alike. Prints every run and the median ratio on/off.
#
# usage: bench/validation-cost.sh [pairs] [seconds]   (default 6 pairs of 10 s; release binaries)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
PAIRS=${1:-6}
SECS=${2:-10}
WORK=$(mktemp -d /tmp/chronik-vcost.XXXXXX)
PORT=$((20000 + RANDOM % 10000))
trap cleanup EXIT INT TERM

run_one() { # $1: on|off, $2: run number
    local mode=$1 n=$2 env=()
    [[ $mode == off ]] && env=(CHRONIK_BENCH_SKIP_RECORD_VALIDATION=1)
    rm -rf "$WORK/data"
    env "${env[@]}" "$BIN/chronik-server" --data-dir "$WORK/data" --cores 2 \
        --listen "127.0.0.1:$PORT" --controller-listen "127.0.0.1:$((PORT + 1))" --metrics-listen none \
        >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_serving "$WORK/server.log" || true
    "$BIN/chronik-bench" --bootstrap-servers "127.0.0.1:$PORT" --topic t --mode produce \
        --concurrency 64 --message-size 1024 --duration "${SECS}s" --acks 1 --create-topic \
        --json-output "$WORK/$mode-$n.json" >/dev/null
    stop_server
    print_run "$WORK/$mode-$n.json" "$mode"
}

alternate_pairs on off
python3 - "$WORK" "$PAIRS" <<'PY'
import json, statistics, sys
w, pairs = sys.argv[1], int(sys.argv[2])
tp, p99 = [], []
for n in range(1, pairs + 1):
    on = json.load(open(f"{w}/on-{n}.json")); off = json.load(open(f"{w}/off-{n}.json"))
    tp.append(on["msgs_per_sec"] / off["msgs_per_sec"])
    p99.append(on["latency_p99_ms"] / off["latency_p99_ms"])
print(f"throughput on/off per pair: {' '.join(f'{x:.3f}' for x in tp)}; median {statistics.median(tp):.3f}")
print(f"p99 on/off per pair:        {' '.join(f'{x:.3f}' for x in p99)}; median {statistics.median(p99):.3f}")
PY
