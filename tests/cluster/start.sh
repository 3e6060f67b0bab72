#!/usr/bin/env bash
# Starts an N-node chronik cluster on loopback.
#   tests/cluster/start.sh [N]            (default 3)
# Environment (all optional):
#   CHRONIK_BIN            chronik-server binary   (default: target/release, else target/debug)
#   CHRONIK_BASE_PORT      Kafka port of node 1; node i listens on BASE+i-1   (default 9092)
#   CHRONIK_CONTROLLER_BASE_PORT  Raft port of node 1 (default BASE+1000)
#   CHRONIK_METRICS_BASE_PORT     metrics port (/metrics, /health) of node 1; node i serves on
#                          METRICS_BASE+i-1 (default 9644)
#   CHRONIK_CLUSTER_DIR    data, logs and pid files (default: a new temp dir, printed)
#   CHRONIK_ARGS           extra flags for every node (e.g. "--broker-session-timeout-ms 1000")
#   CHRONIK_CLUSTER_SECRET_FILE  the cluster secret every node gets (default: a new one,
#                          $CHRONIK_CLUSTER_DIR/cluster.secret, kept for restarts)
# Waits until every node serves, then prints the bootstrap list. Stop with tests/cluster/stop.sh
# (same CHRONIK_CLUSTER_DIR). Operator commands need the secret too:
#   chronik-server cluster rebalance --cluster-secret-file $CHRONIK_CLUSTER_DIR/cluster.secret
set -euo pipefail
n=${1:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${CHRONIK_BIN:-}
if [ -z "$bin" ]; then
  for p in "$root/target/release/chronik-server" "$root/target/debug/chronik-server"; do
    if [ -x "$p" ]; then bin=$p; break; fi
  done
fi
[ -x "${bin:-}" ] || { echo "build chronik-server first (cargo build --release --bin chronik-server)" >&2; exit 1; }
base=${CHRONIK_BASE_PORT:-9092}
cbase=${CHRONIK_CONTROLLER_BASE_PORT:-$((base + 1000))}
mbase=${CHRONIK_METRICS_BASE_PORT:-9644}
dir=${CHRONIK_CLUSTER_DIR:-$(mktemp -d /tmp/chronik-cluster.XXXXXX)}
mkdir -p "$dir"
# One secret for all nodes of the new cluster (each node copies it into its data dir).
secret=${CHRONIK_CLUSTER_SECRET_FILE:-$dir/cluster.secret}
if [ ! -s "$secret" ]; then
  (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$secret" && echo >>"$secret")
fi
quorum=""
for i in $(seq 1 "$n"); do
  quorum+="${quorum:+,}$i@127.0.0.1:$((cbase + i - 1))"
done
bootstrap=""
for i in $(seq 1 "$n"); do
  port=$((base + i - 1))
  # shellcheck disable=SC2086
  "$bin" --node-id "$i" --listen "127.0.0.1:$port" \
    --controller-listen "127.0.0.1:$((cbase + i - 1))" --controller-quorum "$quorum" \
    --metrics-listen "127.0.0.1:$((mbase + i - 1))" \
    --data-dir "$dir/node-$i" --cluster-secret-file "$secret" --no-pin --cores 2 ${CHRONIK_ARGS:-} \
    >>"$dir/node-$i.log" 2>&1 &
  echo $! >"$dir/node-$i.pid"
  bootstrap+="${bootstrap:+,}127.0.0.1:$port"
done
echo "$bootstrap" >"$dir/bootstrap"
# Return once every node serves (each logs "chronik-server serving" then), so the next command
# can use the cluster at once.
for _ in $(seq 1 600); do
  ready=0
  for i in $(seq 1 "$n"); do
    grep -q "chronik-server serving" "$dir/node-$i.log" 2>/dev/null && ready=$((ready + 1))
    if ! kill -0 "$(cat "$dir/node-$i.pid")" 2>/dev/null; then
      echo "node $i exited during start-up; the end of $dir/node-$i.log:" >&2
      tail -n 20 "$dir/node-$i.log" >&2
      exit 1
    fi
  done
  [ "$ready" = "$n" ] && break
  sleep 0.1
done
if [ "$ready" != "$n" ]; then
  echo "only $ready of $n nodes serve after 60 s (logs in $dir)" >&2
  exit 1
fi
echo "cluster dir: $dir (cluster secret: $secret)" >&2
echo "$bootstrap"
