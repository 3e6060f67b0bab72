#!/usr/bin/env bash
# An independent yardstick: librdkafka's own rdkafka_performance, built from the librdkafka
# sources that ship inside the rdkafka-sys crate (nothing is downloaded beyond crates.io), run
# against chronik in the scenarios chronik-bench reports, beside the raw limits of this machine
# measured in the same run:
#   - 1 node, 1 partition, 1 KiB, acks=1;
#   - 1 node, 1 partition, 1 KiB, acks=all, idempotent;
#   - 3 nodes, 3 partitions, RF 3, 1 KiB, acks=all, idempotent;
#   - issue 24's many-partitions goal: 3 nodes, RF 3, acks=all, idempotent, over 3 and over 1,000
#     partitions, each record to a random partition (`sticky.partitioning.linger.ms=0`) and with
#     librdkafka's own default `linger.ms=5` (rdkafka_performance sets 1000 ms, so over 1,000
#     partitions no batch filled and nothing was sent for a second), after a warm-up pass that
#     gives every partition its first record (which creates its directory: Kafka does that at
#     CreateTopics). The row pair's ratio is printed.
# After each run, the records the broker stores (sum of the partitions' log end offsets, from
# `chronik-server topic describe`) must equal the records librdkafka reports delivered.
#
# usage: bench/rdkafka-perf.sh [--quick]
# env:   PERF_MESSAGES_1NODE (default 5000000; --quick 500000), PERF_MESSAGES_3NODES (default
#        2000000; --quick 200000), PERF_WARMUP_MESSAGES (the many-partitions pair's warm-up,
#        default 50000), CARGO_TARGET_DIR (default <repo>/target), PERF_SKIP_BUILD=1
#        (use the release binaries already there), PERF_SERVER_FLAGS (extra chronik-server flags)
# Writes bench/results/<date>-rdkafka-perf.md (and the raw output beside it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
N1=${PERF_MESSAGES_1NODE:-5000000}
N3=${PERF_MESSAGES_3NODES:-2000000}
N3W=${PERF_WARMUP_MESSAGES:-50000}
if [[ "${1:-}" == "--quick" ]]; then
    N1=${PERF_MESSAGES_1NODE:-500000}
    N3=${PERF_MESSAGES_3NODES:-200000}
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
SERVER_FLAGS=(${PERF_SERVER_FLAGS:-})

if [[ "${PERF_SKIP_BUILD:-0}" != "1" ]]; then
    echo "== building release binaries"
    cargo build --release --bin chronik-server -p chronik
fi

# librdkafka from the rdkafka-sys crate this workspace locks. Plaintext only: the runs are on
# loopback; no optional system library is needed.
source "$ROOT/bench/lib.sh"
build_rdkafka_perf rdkafka-perf --disable-ssl --disable-gssapi --disable-curl --disable-zstd \
    --disable-lz4-ext --disable-zlib

DATE=$(date -u +%Y-%m-%d)
OUT=$ROOT/bench/results
RAW=$OUT/$DATE-rdkafka-perf
mkdir -p "$RAW"
REPORT=$OUT/$DATE-rdkafka-perf.md
WORK=$(mktemp -d /tmp/chronik-rdkafka-perf.XXXXXX)
ROWS=()
trap cleanup EXIT INT TERM

# Raw limits of this machine, measured now: O_DIRECT write bandwidth of the data disk (1 MiB
# writes, queue depth 1) and loopback TCP bandwidth (one stream, 1 MiB writes).
echo "== raw limits"
DISK_MBS=$(dd if=/dev/zero of="$WORK/direct.test" bs=1M count=1024 oflag=direct,dsync 2>&1 \
    | sed -n 's/.*copied, \([0-9.]*\) s.*/\1/p' | awk '{ printf "%.0f", 1073.741824 / $1 }')
rm -f "$WORK/direct.test"
LOOP_MBS=$(python3 - <<'EOF'
import socket, threading, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
total = 4 << 30
def sink():
    c, _ = srv.accept(); got = 0
    while got < total:
        b = c.recv_into(buf)
        if not b: break
        got += b
buf = bytearray(1 << 20)
t = threading.Thread(target=sink); t.start()
s = socket.create_connection(("127.0.0.1", port)); chunk = bytes(1 << 20)
start = time.time(); sent = 0
while sent < total:
    s.sendall(chunk); sent += len(chunk)
t.join(); el = time.time() - start
print(f"{total / el / 1e6:.0f}")
EOF
)
echo "   disk O_DIRECT 1 MiB writes: $DISK_MBS MB/s; loopback: $LOOP_MBS MB/s"

start_node() {
    PORT=$(free_port)
    mkdir -p "$WORK/single"
    "$BIN/chronik-server" --listen "127.0.0.1:$PORT" --data-dir "$WORK/single" --cores 2 --metrics-listen none \
        ${SERVER_FLAGS[@]+"${SERVER_FLAGS[@]}"} >"$RAW/server-single.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        grep -q "chronik-server serving" "$RAW/server-single.log" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "chronik-server did not start" >&2
    tail -20 "$RAW/server-single.log" >&2
    return 1
}

# stored BOOTSTRAP TOPIC: the sum of the topic's partitions' log end offsets.
stored() {
    "$BIN/chronik-server" topic describe "$2" --brokers "$1" --format json | python3 -c '
import json, sys
d = json.load(sys.stdin)
parts = d["partitions"] if isinstance(d, dict) else d[0]["partitions"]
print(sum(p["log_end_offset"] for p in parts))'
}

# run NAME BOOTSTRAP TOPIC PARTITIONS RF MESSAGES ACKS [rdkafka_performance flags...]
# With WARM set, first produces that many records with the same flags, not measured.
run() {
    local name=$1 boot=$2 topic=$3 parts=$4 rf=$5 n=$6 acks=$7
    shift 7
    "$BIN/chronik-server" topic create "$topic" --brokers "$boot" -p "$parts" -r "$rf" >/dev/null
    local warmed=0
    if [[ -n ${WARM:-} ]]; then
        "$PERF" -P -b "$boot" -t "$topic" -s 1024 -c "$WARM" -a "$acks" "$@" >"$RAW/$name.warm.txt" 2>&1 || true
        warmed=$(grep "messages produced" "$RAW/$name.warm.txt" | tail -1 \
            | sed -n 's/.* \([0-9]*\) delivered .*/\1/p')
        echo "   warm-up: ${warmed:-0} records delivered"
    fi
    echo "== $name: rdkafka_performance -P -t $topic -s 1024 -c $n -a $acks $*"
    "$PERF" -P -b "$boot" -t "$topic" -s 1024 -c "$n" -a "$acks" -v "$@" >"$RAW/$name.txt" 2>&1 || true
    local summary
    summary=$(grep "messages produced" "$RAW/$name.txt" | tail -1 || true)
    echo "   $summary"
    local delivered msgs_s mb_s failed st
    delivered=$(sed -n 's/.* \([0-9]*\) delivered .*/\1/p' <<<"$summary")
    failed=$(sed -n 's/.*, \([0-9]*\) failed).*/\1/p' <<<"$summary")
    msgs_s=$(sed -n 's/.*ms: \([0-9]*\) msgs\/s.*/\1/p' <<<"$summary")
    mb_s=$(sed -n 's/.*msgs\/s and \([0-9.]*\) MB\/s.*/\1/p' <<<"$summary")
    st=$(stored "$boot" "$topic")
    local expect=$((${delivered:-0} + ${warmed:-0}))
    local check="stored $st = delivered $expect"
    [[ ${warmed:-0} == 0 ]] || check="$check (warm-up ${warmed} + measured ${delivered})"
    [[ "$st" == "$expect" ]] || check="MISMATCH: stored $st, delivered $expect"
    echo "   $check"
    # Each byte is written once per replica, all on this one disk, and crosses loopback once to
    # the leader and once to each follower.
    local frac_disk frac_loop
    frac_disk=$(awk -v a="${mb_s:-0}" -v r="$rf" -v b="$DISK_MBS" 'BEGIN { printf "%.0f%%", 100 * a * r / b }')
    frac_loop=$(awk -v a="${mb_s:-0}" -v r="$rf" -v b="$LOOP_MBS" 'BEGIN { printf "%.0f%%", 100 * a * r / b }')
    ROWS+=("| $name | ${msgs_s:-?} | ${mb_s:-?} | $frac_disk | $frac_loop | ${failed:-?} | $check |")
    LAST_MSGS=${msgs_s:-0}
}

start_node
B=127.0.0.1:$PORT
run 1node-p1-1KiB-acks1 "$B" perf1 1 1 "$N1" 1
run 1node-p1-1KiB-acksall-idempotent "$B" perf2 1 1 "$N1" -1 -X enable.idempotence=true
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""

CLUSTER_DIR="$WORK/cluster"
BASE=$(free_port_range 3)
MBASE=$(free_port_range 3)
BOOT=$(CHRONIK_BIN="$BIN/chronik-server" CHRONIK_BASE_PORT="$BASE" CHRONIK_METRICS_BASE_PORT="$MBASE" \
    CHRONIK_CLUSTER_DIR="$CLUSTER_DIR" \
    CHRONIK_ARGS="${PERF_SERVER_FLAGS:-}" "$ROOT/tests/cluster/start.sh" 3 | tail -1)
run 3nodes-p3-rf3-1KiB-acksall-idempotent "$BOOT" perf3 3 3 "$N3" -1 -X enable.idempotence=true
SPREAD=(-X enable.idempotence=true -X linger.ms=5 -X sticky.partitioning.linger.ms=0)
WARM=$N3W run 3nodes-p3-rf3-acksall-idempotent-spread-linger5 "$BOOT" perf4 3 3 "$N3" -1 "${SPREAD[@]}"
P3=$LAST_MSGS
WARM=$N3W run 3nodes-p1000-rf3-acksall-idempotent-spread-linger5 "$BOOT" perf5 1000 3 "$N3" -1 "${SPREAD[@]}"
P1000=$LAST_MSGS
RATIO=$(awk -v a="$P1000" -v b="$P3" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }')
echo "   1,000 partitions / 3 partitions (spread, linger 5 ms): $RATIO"
"$ROOT/tests/cluster/stop.sh" "$CLUSTER_DIR" >/dev/null 2>&1 || true
cp "$CLUSTER_DIR"/node-*.log "$RAW/" 2>/dev/null || true
CLUSTER_DIR=""

{
    echo "# rdkafka_performance against chronik, $DATE"
    echo
    echo "librdkafka $LIBRDKAFKA_VERSION ($RDKAFKA_SYS), 1 KiB records, default producer settings"
    echo "otherwise; chronik-server release build, --cores 2, on loopback with the client."
    echo "Raw limits measured in the same run: data disk O_DIRECT 1 MiB writes $DISK_MBS MB/s,"
    echo "loopback TCP $LOOP_MBS MB/s. Machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "Fractions of a limit count every replica's copy (RF × MB/s), as all replicas share the disk and loopback."
    echo
    echo "| scenario | msg/s | MB/s | of disk limit | of loopback limit | failed | stored vs delivered |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Many partitions (issue 24): the spread rows' 1,000-partition / 3-partition throughput: **$RATIO**."
    echo
    echo "Raw output: \`bench/results/$DATE-rdkafka-perf/\`. Command: \`bench/rdkafka-perf.sh${1:+ $1}\`."
} >"$REPORT"
cat "$REPORT"
