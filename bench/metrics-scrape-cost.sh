#!/usr/bin/env bash
# The cost of the metrics endpoint on produce (issue 22): the same produce run against a broker
# scraped every second (/metrics, as Prometheus would) and one started with
# --metrics-listen none, alternated so the shared host's speed changes hit both alike. Prints
# every run and the median throughput ratio scraped/none (goal: >= 0.98).
#
# usage: bench/metrics-scrape-cost.sh [pairs] [seconds]   (default 4 pairs of 10 s; release binaries)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
PAIRS=${1:-4}
SECS=${2:-10}
WORK=$(mktemp -d /tmp/chronik-mcost.XXXXXX)
PORT=$((20000 + RANDOM % 10000))
MPORT=$((PORT + 2))
SCRAPER=""
stop_all() {
    [[ -n "$SCRAPER" ]] && kill "$SCRAPER" 2>/dev/null && wait "$SCRAPER" 2>/dev/null
    cleanup
}
trap stop_all EXIT INT TERM

run_one() { # $1: scraped|none, $2: run number
    local mode=$1 n=$2 metrics=none
    [[ $mode == scraped ]] && metrics="127.0.0.1:$MPORT"
    rm -rf "$WORK/data"
    "$BIN/chronik-server" --data-dir "$WORK/data" --cores 2 --no-pin \
        --listen "127.0.0.1:$PORT" --controller-listen "127.0.0.1:$((PORT + 1))" \
        --metrics-listen "$metrics" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_serving "$WORK/server.log" || true
    if [[ $mode == scraped ]]; then
        # Bounded: one scrape a second for the run's length plus a margin.
        (for _ in $(seq $((SECS + 10))); do
            curl -s -o "$WORK/last-scrape.txt" "http://127.0.0.1:$MPORT/metrics" || true
            sleep 1
        done) &
        SCRAPER=$!
    fi
    "$BIN/chronik-bench" --bootstrap-servers "127.0.0.1:$PORT" --topic t --mode produce \
        --concurrency 64 --message-size 1024 --duration "${SECS}s" --acks 1 --create-topic \
        --json-output "$WORK/$mode-$n.json" >/dev/null
    if [[ -n "$SCRAPER" ]]; then
        kill "$SCRAPER" 2>/dev/null || true
        wait "$SCRAPER" 2>/dev/null || true
        SCRAPER=""
        grep -q '^chronik_records_produced_total{topic="t"}' "$WORK/last-scrape.txt" \
            || { echo "the scrapes did not see the produced records" >&2; exit 1; }
    fi
    stop_server
    print_run "$WORK/$mode-$n.json" "$mode"
}

alternate_pairs scraped none
python3 - "$WORK" "$PAIRS" <<'PY'
import json, statistics, sys
w, pairs = sys.argv[1], int(sys.argv[2])
tp = []
for n in range(1, pairs + 1):
    s = json.load(open(f"{w}/scraped-{n}.json")); o = json.load(open(f"{w}/none-{n}.json"))
    tp.append(s["msgs_per_sec"] / o["msgs_per_sec"])
print(f"throughput scraped/none per pair: {' '.join(f'{x:.3f}' for x in tp)}; median {statistics.median(tp):.3f}")
PY
