#!/usr/bin/env bash
# Stops the cluster started by start.sh: SIGTERM, then SIGKILL after 10 s.
#   CHRONIK_CLUSTER_DIR=<dir> tests/cluster/stop.sh      (or: tests/cluster/stop.sh <dir>)
set -uo pipefail
dir=${1:-${CHRONIK_CLUSTER_DIR:-}}
[ -n "$dir" ] && [ -d "$dir" ] || { echo "usage: stop.sh CLUSTER_DIR (or set CHRONIK_CLUSTER_DIR)" >&2; exit 1; }
pids=()
for f in "$dir"/node-*.pid; do
  [ -e "$f" ] || continue
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  rm -f "$f"
done
for _ in $(seq 1 100); do
  alive=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && exit 0
  sleep 0.1
done
for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
exit 0
