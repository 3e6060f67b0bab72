#!/usr/bin/env bash
# chronik benchmark suite: builds release binaries, starts chronik-server on loopback with a
# temporary data dir, runs the standard matrix, stops everything, and writes
# bench/results/<date>.md and bench/results/<date>.svg (plus the raw JSON/text of every row in
# bench/results/<date>/).
#
# usage: bench/run-suite.sh            full matrix (30 s per row, 1,000 topic creations)
#        bench/run-suite.sh --quick    smoke run (5 s per row, 50 topic creations)
# Then issue 24's scale goals, restart with many partitions and the librdkafka yardstick, each by
# its own script (bench/scale-goals.sh, bench/restart-many-partitions.sh, bench/rdkafka-perf.sh;
# --quick runs them small); their summaries go into the results file, their output beside it.
# env:   SUITE_DURATION (e.g. 60s), SUITE_WARMUP (e.g. 5s), SUITE_METADATA_TOPICS (e.g. 1000),
#        CARGO_TARGET_DIR (default: <repo>/target), SUITE_SKIP_BUILD=1 (use the release binaries
#        already there), SUITE_SERVER_FLAGS (extra chronik-server flags, e.g. --no-pin on a machine
#        shared with other work), SUITE_SCALE=0 (skip the scale goals and rdkafka_performance)
#
# The 3-node row uses tests/cluster/start.sh (CHRONIK_BIN, CHRONIK_BASE_PORT, CHRONIK_CLUSTER_DIR;
# prints the bootstrap list) and tests/cluster/stop.sh. Without start.sh the row is skipped and the
# report says so.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION=${SUITE_DURATION:-30s}
WARMUP=${SUITE_WARMUP:-5s}
TOPICS=${SUITE_METADATA_TOPICS:-1000}
if [[ "${1:-}" == "--quick" ]]; then
    DURATION=${SUITE_DURATION:-5s}
    WARMUP=${SUITE_WARMUP:-1s}
    TOPICS=${SUITE_METADATA_TOPICS:-50}
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release

if [[ "${SUITE_SKIP_BUILD:-0}" != "1" ]]; then
    echo "== building release binaries"
    cargo build --release --bin chronik-server -p chronik
    cargo build --release -p chronik-bench --bin chronik-bench --bin chronik-bench-plot
fi
SERVER_FLAGS=(${SUITE_SERVER_FLAGS:-})

DATE=$(date -u +%Y-%m-%d)
OUT=$ROOT/bench/results
RUN=$OUT/$DATE
mkdir -p "$RUN"
WORK=$(mktemp -d /tmp/chronik-suite.XXXXXX)
source "$ROOT/bench/lib.sh"
ROWS=()        # name=json for the plot
NOTES=()
trap cleanup EXIT INT TERM

# start_node NAME [extra chronik-server flags...]
start_node() {
    local name=$1
    shift
    PORT=$(free_port)
    local data="$WORK/$name-data"
    mkdir -p "$data"
    "$BIN/chronik-server" --listen "127.0.0.1:$PORT" --data-dir "$data" ${SERVER_FLAGS[@]+"${SERVER_FLAGS[@]}"} "$@" \
        >"$RUN/server-$name.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            echo "== chronik-server ($name) on 127.0.0.1:$PORT, pid $SERVER_PID"
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "chronik-server exited; last log lines:" >&2
            tail -20 "$RUN/server-$name.log" >&2
            SERVER_PID=""
            return 1
        fi
        sleep 0.1
    done
    echo "chronik-server did not listen within 30 s" >&2
    return 1
}

stop_node() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

# bench NAME BOOTSTRAP [chronik-bench flags...]: one row; a failing row is recorded, not fatal.
bench() {
    local name=$1 bootstrap=$2
    shift 2
    echo "== $name: chronik-bench $*"
    set +e
    "$BIN/chronik-bench" -b "$bootstrap" --json-output "$RUN/$name.json" --report-interval-secs 5 "$@" \
        2>&1 | tee "$RUN/$name.txt"
    local rc=${PIPESTATUS[0]}
    set -e
    if [[ -s "$RUN/$name.json" ]]; then
        ROWS+=("$name=$RUN/$name.json")
    fi
    if [[ $rc -ne 0 ]]; then
        NOTES+=("row '$name' exited with status $rc (see $DATE/$name.txt)")
    fi
}

# Rows run in the default record model (concurrency = records in flight, latency per record)
# unless marked "batch" (--producer-model batch: each task keeps its own batches in flight, the
# throughput ceiling; latency per batch).
# 1. one node, 1 partition, 1 KiB, acks=1, concurrency 64: produce, then consume it back.
start_node single
B=127.0.0.1:$PORT
bench 1-produce-p1-1KiB-acks1 "$B" -t s1 -p 1 -r 1 --create-topic -s 1024 --acks 1 -c 64 -d "$DURATION" -w "$WARMUP"
bench 1b-produce-p1-1KiB-acks1-batch "$B" -t s1 -p 1 -r 1 -s 1024 --acks 1 -c 64 -d "$DURATION" -w "$WARMUP" --producer-model batch
bench 1-consume-p1-1KiB "$B" -t s1 -m consume -s 1024 -c 1 --stop-at-end -d "$DURATION"
# 3. message-rate ceiling: 100-byte messages, 12 partitions, acks=1.
bench 3-produce-p12-100B-acks1-batch "$B" -t s3 -p 12 -r 1 --create-topic -s 100 --acks 1 -c 64 -d "$DURATION" -w "$WARMUP" --producer-model batch
# 2a. 3 partitions, 1 KiB, acks=all, default flush (interval).
bench 2a-produce-p3-1KiB-acksall-flush-interval "$B" -t s2 -p 3 -r 1 --create-topic -s 1024 --acks all -c 64 -d "$DURATION" -w "$WARMUP"
# 5. metadata: topic creations, concurrency 16.
bench 5-metadata-create-topics "$B" -t suite-meta -m metadata -n "$TOPICS" -c 16 -p 1 -r 1 -d 10m
stop_node

# 2b. the same with fdatasync before every ack.
start_node always --log-flush always
B=127.0.0.1:$PORT
bench 2b-produce-p3-1KiB-acksall-flush-always "$B" -t s2 -p 3 -r 1 --create-topic -s 1024 --acks all -c 64 -d "$DURATION" -w "$WARMUP"
stop_node

# 4. three nodes, 3 partitions, RF 3, acks=all, concurrency 128, 1 KiB.
if [[ -x "$ROOT/tests/cluster/start.sh" ]]; then
    CLUSTER_DIR="$WORK/cluster"
    BASE=$(free_port_range 3)
    BOOT=$(CHRONIK_BIN="$BIN/chronik-server" CHRONIK_BASE_PORT="$BASE" CHRONIK_CLUSTER_DIR="$CLUSTER_DIR" \
        "$ROOT/tests/cluster/start.sh" 3 | tail -1)
    up=0
    for _ in $(seq 1 300); do
        up=1
        for i in 0 1 2; do port_free $((BASE + i)) && up=0; done
        [[ $up == 1 ]] && break
        sleep 0.1
    done
    if [[ $up == 1 && -n "$BOOT" ]]; then
        echo "== 3-node cluster on $BOOT"
        bench 4-produce-3nodes-p3-rf3-1KiB-acksall "$BOOT" -t s4 -p 3 -r 3 --create-topic -s 1024 --acks all -c 128 -d "$DURATION" -w "$WARMUP"
        bench 4b-produce-3nodes-p3-rf3-1KiB-acksall-batch "$BOOT" -t s4 -p 3 -r 3 -s 1024 --acks all -c 128 -d "$DURATION" -w "$WARMUP" --producer-model batch
    else
        NOTES+=("3-node row skipped: the cluster from tests/cluster/start.sh did not come up (logs in the cluster dir)")
    fi
    "$ROOT/tests/cluster/stop.sh" "$CLUSTER_DIR" >/dev/null 2>&1 || true
    cp "$CLUSTER_DIR"/node-*.log "$RUN/" 2>/dev/null || true
    CLUSTER_DIR=""
else
    NOTES+=("3-node row skipped: tests/cluster/start.sh does not exist yet")
fi

# 6. Issue 24's scale goals and the independent client, each its own script run on fresh
# nodes: 1,000 partitions against 3, an idle 300-partition topic beside the 3-node run, 1,000
# CreateTopics from 16 clients (scale-goals.sh, this build in both slots of its pairs); restart
# with many partitions after a clean stop and after SIGKILL (restart-many-partitions.sh); and
# librdkafka's rdkafka_performance beside the disk and loopback limits (rdkafka-perf.sh, which
# writes its own results file). SUITE_SCALE=0 skips them.
if [[ "${SUITE_SCALE:-1}" == "1" ]]; then
    if [[ "${1:-}" == "--quick" ]]; then
        SCALE_ARGS=(1 5 "create idle many"); RESTART_PARTS=1000; PERF_ARGS=(--quick)
    else
        SCALE_ARGS=(3 20 "create idle many"); RESTART_PARTS=10000; PERF_ARGS=()
    fi
    echo "== scale goals (bench/scale-goals.sh ${SCALE_ARGS[*]})"
    CHRONIK_BENCH="$BIN/chronik-bench" "$ROOT/bench/scale-goals.sh" "$BIN/chronik-server" \
        "$BIN/chronik-server" "${SCALE_ARGS[@]}" >"$RUN/scale-goals.txt" 2>&1 ||
        NOTES+=("bench/scale-goals.sh failed: see scale-goals.txt")
    echo "== restart with $RESTART_PARTS partitions (bench/restart-many-partitions.sh)"
    PARTS=$RESTART_PARTS BENCH="$BIN/chronik-bench" BIN="$BIN/chronik-server" \
        "$ROOT/bench/restart-many-partitions.sh" >"$RUN/restart-many-partitions.txt" 2>&1 ||
        NOTES+=("bench/restart-many-partitions.sh failed: see restart-many-partitions.txt")
    echo "== librdkafka's rdkafka_performance (bench/rdkafka-perf.sh ${PERF_ARGS[*]})"
    PERF_SKIP_BUILD=1 "$ROOT/bench/rdkafka-perf.sh" ${PERF_ARGS[@]+"${PERF_ARGS[@]}"} \
        >"$RUN/rdkafka-perf.txt" 2>&1 ||
        NOTES+=("bench/rdkafka-perf.sh failed: see rdkafka-perf.txt")
fi

echo "== writing results"
if [[ ${#ROWS[@]} -eq 0 ]]; then
    echo "no row produced a report" >&2
    exit 1
fi
"$BIN/chronik-bench-plot" --svg "$OUT/$DATE.svg" --markdown "$WORK/table.md" "${ROWS[@]}"
{
    echo "# chronik benchmark suite — $DATE"
    echo
    echo "- commit: \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`"
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//'), $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}'), kernel $(uname -r)"
    echo "- broker and load generator share this machine (loopback); each row: $DURATION measured after $WARMUP warm-up; chronik-server flags: ${SUITE_SERVER_FLAGS:-(defaults)}"
    echo "- latency: produce rows = per record, send → acknowledged (record model, the default; concurrency = records in flight), or per batch, created → acknowledged (rows marked batch: --producer-model batch); consume = per fetch request; metadata = CreateTopics → visible on every bootstrap server"
    echo "- stored / acked: growth of the partitions' end offsets (ListOffsets) vs messages the broker acknowledged; fewer stored fails the row"
    echo
    cat "$WORK/table.md"
    echo
    echo "![throughput and latency per scenario]($DATE.svg)"
    echo
    for f in scale-goals restart-many-partitions rdkafka-perf; do
        [[ -s "$RUN/$f.txt" ]] || continue
        echo "## bench/$f.sh"
        echo
        echo '```'
        tail -n 25 "$RUN/$f.txt"
        echo '```'
        echo
    done
    if [[ ${#NOTES[@]} -gt 0 ]]; then
        echo "Notes:"
        for n in "${NOTES[@]}"; do echo "- $n"; done
    fi
    echo
    echo "Raw output of every row: \`bench/results/$DATE/\`."
} >"$OUT/$DATE.md"
echo "== wrote $OUT/$DATE.md and $OUT/$DATE.svg"
