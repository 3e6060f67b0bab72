#!/usr/bin/env bash
# Start-up and recovery with many partitions on one node (issue 24): creates PARTS partitions
# (default 10,000, RF 1, `--cores 2`), writes 3 records to each, then restarts the node after a
# clean stop and after SIGKILL and reports when it serves, when every log is open again
# (`chronik_open_logs`) and when a produce to the topic is stored. Release binaries.
#
# usage: [PARTS=N] bench/restart-many-partitions.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/chronik-server}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/chronik-bench}
PARTS=${PARTS:-10000}
WORK=$(mktemp -d /tmp/chronik-restart.XXXXXX)
source "$ROOT/bench/lib.sh"
trap cleanup EXIT INT TERM
PORT=$(free_port_range 3)
start() {
    : >"$WORK/server.log"
    "$BIN" --data-dir "$WORK/data" --cores 2 --listen "127.0.0.1:$PORT" \
        --controller-listen "127.0.0.1:$((PORT + 1))" --metrics-listen "127.0.0.1:$((PORT + 2))" >>"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
}
now() { date +%s.%N; }
since() { python3 -c "print(round($(now)-$1,2))"; }
start; wait_serving "$WORK/server.log"
"$BIN" topic create big -p "$PARTS" -r 1 --brokers "127.0.0.1:$PORT" >/dev/null
"$BENCH" -b "127.0.0.1:$PORT" -t big -m produce -s 100 --acks 1 -c 64 -n $((PARTS * 3)) -d 120s 2>&1 | tail -3
echo "RSS with $PARTS partitions: $(( $(ps -o rss= -p $SERVER_PID) / 1024 )) MiB; data dir $(du -sm $WORK/data | cut -f1) MiB"
for how in clean kill; do
    if [[ $how == clean ]]; then kill "$SERVER_PID"; else kill -9 "$SERVER_PID"; fi
    wait "$SERVER_PID" 2>/dev/null || true
    t0=$(now); start
    for _ in $(seq 600); do grep -q "chronik-server serving" "$WORK/server.log" && break; sleep 0.05; done
    serving=$(since "$t0")
    for _ in $(seq 1200); do
        n=$(curl -s "http://127.0.0.1:$((PORT + 2))/metrics" | awk '/^chronik_open_logs / {print $2}')
        [[ "${n%.*}" == "$PARTS" ]] && break
        sleep 0.05
    done
    open=$(since "$t0")
    # Every partition answers: one record produced to each of them, acks=1.
    "$BENCH" -b "127.0.0.1:$PORT" -t big -m produce -s 100 --acks 1 -c 64 -n "$PARTS" -d 120s >"$WORK/p.txt" 2>&1 || true
    echo "after $how stop: serving in $serving s, all $PARTS logs open in $open s; $PARTS records produced (acks=1) and stored $(since "$t0") s after the start ($(grep -E 'msg/s' "$WORK/p.txt" | head -1))"
done
