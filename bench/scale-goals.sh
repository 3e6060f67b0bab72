#!/usr/bin/env bash
# Two of issue 24's scale goals on a fresh 3-node cluster (`tests/cluster/start.sh`, `--cores 2`)
# per run, for two builds of chronik-server alternated in one session (the host's speed varies
# 2-3x, so only ratios within one session mean something):
#   create  1,000 separate CreateTopics from 16 clients (chronik-bench metadata mode, 1 partition,
#           RF 3): per topic, the time until every node's Metadata shows it (goal p99 < 50 ms),
#           and the CreateTopics answer time
#   idle    the issue-7 run (RF 3, 3 partitions, acks=all, 1 KiB, c=128) alone (A) and beside an
#           idle 300-partition RF 3 topic created just before (C): goal C/A >= 0.90
#   many    the same run over 1,000 partitions (B) against 3 (A), same concurrency: goal
#           B/A >= 0.70 (each run also checks stored = acknowledged on every replica)
# Prints every run and the medians per build.
#
# usage: bench/scale-goals.sh OLD_SERVER NEW_SERVER [pairs] [seconds] [scenarios]
#   (default 3 pairs, 20 s produce runs, scenarios "create idle"; the bench client is
#   target/release/chronik-bench, or $CHRONIK_BENCH)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OLD=${1:?old chronik-server binary}
NEW=${2:?new chronik-server binary}
PAIRS=${3:-3}
SECS=${4:-20}
SCENARIOS=${5:-create idle}
BENCH=${CHRONIK_BENCH:-${CARGO_TARGET_DIR:-$ROOT/target}/release/chronik-bench}
[[ -x $OLD && -x $NEW && -x $BENCH ]] || { echo "need executable $OLD, $NEW and $BENCH" >&2; exit 1; }
WORK=$(mktemp -d /tmp/chronik-scale.XXXXXX)
source "$ROOT/bench/lib.sh"
trap cleanup EXIT INT TERM



# create_run BIN OUT: the metadata-mode run, its JSON report in OUT.
create_run() {
    "$BENCH" --bootstrap-servers "$BOOT" --topic meta --mode metadata -n 1000 -c 16 -p 1 -r 3 \
        --json-output "$2" >/dev/null
}

# produce_run BIN [idle] OUT [partitions]: the issue-7 produce run (3 partitions unless
# given); with "idle", a 300-partition RF 3 topic is created first (and waited for: the CLI
# answers once every node serves it).
produce_run() {
    if [[ ${2:-} == idle ]]; then
        "$1" topic create idle -p 300 -r 3 --brokers "$BOOT" >/dev/null
    fi
    "$BENCH" --bootstrap-servers "$BOOT" --topic busy --mode produce --create-topic \
        --message-size 1024 -p "${4:-3}" -r 3 -c 128 --acks all --duration "${SECS}s" -w 3s \
        --json-output "$3" >/dev/null
}

run_one() { # $1: scenario/variant, $2: old|new, $3: pair number
    local what=$1 which=$2 n=$3 bin out
    bin=$OLD
    [[ $which == new ]] && bin=$NEW
    out="$WORK/$what-$which-$n.json"
    start_cluster "$bin"
    case $what in
        create) create_run "$bin" "$out" ;;
        alone) produce_run "$bin" "" "$out" ;;
        idle) produce_run "$bin" idle "$out" ;;
        many) produce_run "$bin" "" "$out" 1000 ;;
    esac
    stop_cluster
    python3 - "$out" "$what" "$which" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if sys.argv[2] == "create":
    note = next((n for n in r.get("notes", []) if "CreateTopics response" in n), "")
    print(f"{sys.argv[2]:>6} {sys.argv[3]:>3}  visible p50 {r['latency_p50_ms']:6.2f} p99 {r['latency_p99_ms']:6.2f}"
          f" max {r.get('latency_max_ms', float('nan')):6.2f} ms; {note.split('; ')[-1]}")
else:
    print(f"{sys.argv[2]:>6} {sys.argv[3]:>3}  {r['msgs_per_sec']:>9.0f} msg/s  p99 {r['latency_p99_ms']:7.2f} ms")
PY
}

for sc in $SCENARIOS; do
    for n in $(seq "$PAIRS"); do
        case $sc in
            create)
                if ((n % 2)); then run_one create old "$n"; run_one create new "$n"
                else run_one create new "$n"; run_one create old "$n"; fi ;;
            idle)
                # Per build, the run alone and beside the idle topic, back to back.
                for b in $( ((n % 2)) && echo "old new" || echo "new old"); do
                    run_one alone "$b" "$n"; run_one idle "$b" "$n"
                done ;;
            many)
                # Per build, 3 partitions and 1,000, back to back.
                for b in $( ((n % 2)) && echo "old new" || echo "new old"); do
                    [[ -e $WORK/alone-$b-$n.json ]] || run_one alone "$b" "$n"
                    run_one many "$b" "$n"
                done ;;
        esac
    done
done
python3 - "$WORK" "$PAIRS" "$SCENARIOS" <<'PY'
import json, statistics, sys
w, pairs, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
load = lambda k, b, n: json.load(open(f"{w}/{k}-{b}-{n}.json"))
for b in ("old", "new"):
    if "create" in scenarios:
        p50 = [load("create", b, n)["latency_p50_ms"] for n in range(1, pairs + 1)]
        p99 = [load("create", b, n)["latency_p99_ms"] for n in range(1, pairs + 1)]
        print(f"create {b}: visible p50 median {statistics.median(p50):.2f} ms, p99 median {statistics.median(p99):.2f} ms")
    if "idle" in scenarios:
        ratios = [load("idle", b, n)["msgs_per_sec"] / load("alone", b, n)["msgs_per_sec"] for n in range(1, pairs + 1)]
        print(f"idle {b}: beside 300 idle / alone {' '.join(f'{x:.3f}' for x in ratios)} (median {statistics.median(ratios):.3f})")
    if "many" in scenarios:
        ratios = [load("many", b, n)["msgs_per_sec"] / load("alone", b, n)["msgs_per_sec"] for n in range(1, pairs + 1)]
        print(f"many {b}: 1,000 partitions / 3 {' '.join(f'{x:.3f}' for x in ratios)} (median {statistics.median(ratios):.3f})")
PY
