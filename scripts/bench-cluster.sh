#!/usr/bin/env bash
# The cluster layer side by side (PROTOCOL.md §12; BENCHMARKS.md "The cluster layer"): two
# wsgate builds, each in turn, on 127.0.0.1 only, every run bounded.
#
# 1. Loading stored revocations: N user revocations in a fresh Redis, then a node starts and
#    `revocation_load probe` times how long until /metrics shows them all, with chat round
#    trips during and after the load.
# 2. Two-node fan-out: two nodes on one Redis, loadgen's fan-out with members split between
#    them; CPU seconds of both nodes per delivery.
#
# Usage: scripts/bench-cluster.sh NEW_WSGATE OLD_WSGATE [COUNT] [OLD_FORMAT]
#   OLD_FORMAT=unsigned when OLD_WSGATE predates signed control messages.
# Rounds alternate new, old, new, old, so drift on this shared machine hits both.
set -euo pipefail
cd "$(dirname "$0")/.."
NEW=$1 OLD=$2 COUNT=${3:-300000} OLD_FORMAT=${4:-signed}
export WSGATE_SECRET="bench-secret-0123456789abcdef0123456789"
cargo build --release --quiet --features redis --example revocation_load --example loadgen
LOAD=target/release/examples/revocation_load
LOADGEN=target/release/examples/loadgen
OUT=target/bench-cluster
mkdir -p "$OUT"
PORT=19500
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
trap cleanup EXIT

start_redis() {
  PORT=$((PORT + 1)); REDIS_PORT=$PORT
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
  PIDS+=($!)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && return 0; sleep 0.05; done
}
start_node() { # binary -> NODE_PORT NODE_PID
  PORT=$((PORT + 1)); NODE_PORT=$PORT
  "$1" serve --addr "127.0.0.1:$NODE_PORT" --rate-limit 1000000 --rate-burst 1000000 \
    --redis "redis://127.0.0.1:$REDIS_PORT" >/dev/null 2>>"$OUT/wsgate.log" &
  NODE_PID=$!
  PIDS+=($NODE_PID)
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

reload() { # label binary format
  start_redis
  local unsigned=""
  [ "$3" = unsigned ] && unsigned=--unsigned
  "$LOAD" fill --redis "redis://127.0.0.1:$REDIS_PORT" --count "$COUNT" $unsigned 2>/dev/null
  start_node "$2"
  echo "{\"build\": \"$1\", \"result\": $("$LOAD" probe --url "ws://127.0.0.1:$NODE_PORT" --count "$COUNT")}" \
    | tee -a "$OUT/reload.jsonl"
  cleanup
}

fanout() { # label binary scenario-args...
  local label=$1 binary=$2
  shift 2
  start_redis
  start_node "$binary"; local a_port=$NODE_PORT a_pid=$NODE_PID
  start_node "$binary"; local b_port=$NODE_PORT b_pid=$NODE_PID
  sleep 0.5
  local before after result
  before=$(( $(cpu_ticks "$a_pid") + $(cpu_ticks "$b_pid") ))
  result=$("$LOADGEN" fanout "$@" --pubs 1 --duration 10 --url "ws://127.0.0.1:$a_port" \
    --url2 "ws://127.0.0.1:$b_port" --json)
  after=$(( $(cpu_ticks "$a_pid") + $(cpu_ticks "$b_pid") ))
  echo "{\"build\": \"$label\", \"args\": \"$*\", \"nodes_cpu_s\": $(( after - before ))e-2, \"result\": $result}" \
    | tee -a "$OUT/fanout.jsonl"
  cleanup
}

rm -f "$OUT"/*.jsonl
for round in 1 2; do
  reload new "$NEW" signed
  reload old "$OLD" "$OLD_FORMAT"
done
for round in 1 2; do
  for build in new old; do
    binary=$NEW; [ "$build" = old ] && binary=$OLD
    fanout "$build" "$binary" --rooms 1 --subs 500 --rate 0
    fanout "$build" "$binary" --rooms 50 --subs 20 --rate 50
  done
done
# CPU per delivery, by build and scenario.
python3 - "$OUT/fanout.jsonl" <<'PY'
import json, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[(r["args"], r["build"])].append(r["nodes_cpu_s"] / max(1, r["result"]["received"]) * 1e6)
for args in sorted({a for a, _ in rows}):
    new, old = rows[(args, "new")], rows[(args, "old")]
    print(f"{args}: new {[round(x, 2) for x in new]} µs/delivery, old {[round(x, 2) for x in old]}, "
          f"ratio {sum(new) / sum(old):.3f}")
PY
