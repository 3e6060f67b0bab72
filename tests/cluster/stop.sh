#!/usr/bin/env bash
# Stops the cluster started by start.sh, one node at a time: SIGTERM, which makes the node hand
# its partition leaderships to the others first (controlled shutdown, bounded by
# --controlled-shutdown-timeout-ms, 30 s by default), then SIGKILL if it is still up after 40 s.
# One at a time so each node's hand-over finds a controller quorum among the nodes still up.
#   CHRONIK_CLUSTER_DIR=<dir> tests/cluster/stop.sh      (or: tests/cluster/stop.sh <dir>)
set -uo pipefail
dir=${1:-${CHRONIK_CLUSTER_DIR:-}}
[ -n "$dir" ] && [ -d "$dir" ] || { echo "usage: stop.sh CLUSTER_DIR (or set CHRONIK_CLUSTER_DIR)" >&2; exit 1; }
for f in "$dir"/node-*.pid; do
  [ -e "$f" ] || continue
  pid=$(cat "$f")
  rm -f "$f"
  kill -TERM "$pid" 2>/dev/null || continue
  for _ in $(seq 1 400); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
done
exit 0
