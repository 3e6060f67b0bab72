# Shell helpers shared by the benchmark scripts (sourced, not run). The sourcing script sets
# ROOT and WORK; SERVER_PID and CLUSTER_DIR name what `cleanup` stops.

SERVER_PID=""
CLUSTER_DIR=""

# Stops the node or cluster the script started and removes its work dir (trap on exit).
cleanup() {
    set +e
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [[ -n "$CLUSTER_DIR" ]] && "$ROOT/tests/cluster/stop.sh" "$CLUSTER_DIR" >/dev/null 2>&1
    rm -rf "$WORK"
}

# start_cluster BIN: three nodes of BIN from tests/cluster/start.sh under $WORK/cluster (random
# ports); $BOOT is their bootstrap list.
start_cluster() {
    local base mbase
    base=$(free_port_range 3)
    mbase=$(free_port_range 3)
    CLUSTER_DIR="$WORK/cluster"
    rm -rf "$CLUSTER_DIR"
    BOOT=$(CHRONIK_BIN="$1" CHRONIK_BASE_PORT=$base CHRONIK_METRICS_BASE_PORT=$mbase \
        CHRONIK_CLUSTER_DIR="$CLUSTER_DIR" "$ROOT/tests/cluster/start.sh" 3 2>/dev/null | tail -1)
}

# Stops the cluster start_cluster started.
stop_cluster() {
    if [[ -n $CLUSTER_DIR ]]; then
        "$ROOT/tests/cluster/stop.sh" "$CLUSTER_DIR" >/dev/null 2>&1 || true
        CLUSTER_DIR=""
    fi
}

# build_rdkafka_perf NAME CONFIGURE_FLAGS...: librdkafka's rdkafka_performance, built once from
# the sources inside the rdkafka-sys crate this workspace locks (in cargo's registry once the
# workspace has been built or fetched; nothing else is downloaded) under
# $CARGO_TARGET_DIR/NAME/<rdkafka-sys version>. Sets PERF (the program), RDKAFKA_SYS (the crate's
# name and version) and LIBRDKAFKA_VERSION.
build_rdkafka_perf() {
    local name=$1 sys_dir build
    shift
    cargo fetch --locked >/dev/null 2>&1 || true
    sys_dir=$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, os, sys
m = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "rdkafka-sys"))')
    RDKAFKA_SYS=$(basename "$sys_dir")
    build=$CARGO_TARGET_DIR/$name/$RDKAFKA_SYS
    PERF=$build/examples/rdkafka_performance
    if [[ ! -x "$PERF" ]]; then
        echo "== building rdkafka_performance ($*) from $sys_dir/librdkafka"
        rm -rf "$build"
        mkdir -p "$(dirname "$build")"
        cp -r "$sys_dir/librdkafka" "$build"
        (
            cd "$build"
            # The logs go outside the tree: mklove takes any ./configure.<name> for a module.
            ./configure "$@" >../configure.out 2>&1 || { tail -30 ../configure.out; exit 1; }
            make -j"$(nproc)" -C src librdkafka.a >../make.out 2>&1 || { tail -30 ../make.out; exit 1; }
            make -C examples rdkafka_performance >>../make.out 2>&1 || { tail -30 ../make.out; exit 1; }
        )
    fi
    # (-h prints the version and exits 1.)
    LIBRDKAFKA_VERSION=$({ "$PERF" -h 2>&1 || true; } | sed -n 's/.*librdkafka version \([^ ]*\).*/\1/p' | head -1)
}

# Stops the node started as $SERVER_PID (between the runs of a comparison).
stop_server() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# alternate_pairs A B: `run_one A n; run_one B n` for n in 1..$PAIRS, B first in every other pair
# so the shared host's speed changes hit both alike.
alternate_pairs() {
    local n
    for n in $(seq "$PAIRS"); do
        if ((n % 2)); then run_one "$1" "$n"; run_one "$2" "$n"; else run_one "$2" "$n"; run_one "$1" "$n"; fi
    done
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A base port B with B..B+N-1 and B+1000..B+1000+N-1 all free (cluster ports).
free_port_range() {
    local n=$1 b ok
    for _ in $(seq 1 100); do
        b=$((20000 + RANDOM % 30000))
        ok=1
        for i in $(seq 0 $((n - 1))); do
            port_free $((b + i)) && port_free $((b + 1000 + i)) || ok=0
        done
        if [[ $ok == 1 ]]; then
            echo "$b"
            return 0
        fi
    done
    echo "no free port range found" >&2
    return 1
}

free_port() {
    free_port_range 1
}

# Waits (at most 30 s) until the node logging to $1 says it serves.
wait_serving() {
    for _ in $(seq 300); do
        grep -q "chronik-server serving" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# print_run JSON LABEL: one line for a chronik-bench run: label, msg/s and p99 from its JSON report.
print_run() {
    python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:>7}  {r['msgs_per_sec']:>10.0f} msg/s  p99 {r['latency_p99_ms']:.2f} ms")
PY
}
