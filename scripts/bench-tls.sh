#!/usr/bin/env bash
# Handshakes over TLS, side by side in one run, on 127.0.0.1 only: wsgate plain (ws://) and
# with --tls-cert (wss://), and the unauthenticated baseline plain and terminating TLS the
# usual way (tokio-rustls, then accept_hdr_async). Four servers up at once, short slices
# interleaved, so a change in the machine's load hits all four alike. Every wss:// handshake
# is a full one (the load generator resumes no session): what a flood of new clients costs.
#
# Prints handshakes/s and server CPU per handshake for each, and the ratios; raw results go
# to target/bench-tls/.
#
# Usage: scripts/bench-tls.sh [SECONDS_PER_SERVER] [rsa|ec]   (default 10 and rsa: the
# README's rsa:2048 one-liner; ec: a P-256 key)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER=${1:-10}
KEY_KIND=${2:-rsa}
OUT=${CARGO_TARGET_DIR:-target}/bench-tls
mkdir -p "$OUT"
rm -f "$OUT"/*.jsonl "$OUT"/*.log
export WSGATE_SECRET="bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

cargo build --release --quiet --features tls --bin wsgate --example baseline --example loadgen
BIN=${CARGO_TARGET_DIR:-target}/release
case "$KEY_KIND" in
  rsa) NEWKEY=(-newkey rsa:2048) ;;
  ec) NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
  *) echo "key kind: rsa or ec" >&2; exit 2 ;;
esac
openssl req -x509 "${NEWKEY[@]}" -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost -addext basicConstraints=critical,CA:FALSE -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null
TLS=(--tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem")

PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap stop_all EXIT

wait_port() { # port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1" >&2
  exit 1
}

declare -A PID_OF PORT_OF
PORT=19300
start() { # name command...
  local name=$1
  shift
  PORT=$((PORT + 1))
  "$@" >/dev/null 2>"$OUT/$name.log" &
  PIDS+=($!)
  PID_OF[$name]=$!
  PORT_OF[$name]=$PORT
  wait_port "$PORT"
}
start wsgate-ws "$BIN/wsgate" serve --addr "127.0.0.1:$((PORT + 1))" --max-connections 19000
start wsgate-wss "$BIN/wsgate" serve --addr "127.0.0.1:$((PORT + 1))" --max-connections 19000 "${TLS[@]}"
start baseline-ws "$BIN/examples/baseline" "127.0.0.1:$((PORT + 1))"
start baseline-wss "$BIN/examples/baseline" "127.0.0.1:$((PORT + 1))" "${TLS[@]}"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() { # name seconds
  local name=$1 pid=${PID_OF[$1]} port=${PORT_OF[$1]} scheme=ws
  [[ $name == *-wss ]] && scheme=wss
  local before after result
  before=$(cpu_ticks "$pid")
  result=$("$BIN/examples/loadgen" handshake --url "$scheme://127.0.0.1:$port" --ca "$OUT/cert.pem" \
    --conns 50 --duration "$2" --json)
  after=$(cpu_ticks "$pid")
  echo "${result%\}}, \"server_cpu_s\": $(( after - before ))e-2}" >>"$OUT/$name.jsonl"
}

echo "Handshakes for ${SECONDS_PER}s on each of four servers ($KEY_KIND key), in 5 interleaved slices..." >&2
SLICE=$(( SECONDS_PER / 5 > 0 ? SECONDS_PER / 5 : 1 ))
for _ in 1 2 3 4 5; do
  for name in wsgate-ws wsgate-wss baseline-ws baseline-wss; do
    measure "$name" "$SLICE"
  done
done

python3 - "$OUT" "$KEY_KIND" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
def total(name):
    lines = [json.loads(l) for l in (out / f"{name}.jsonl").read_text().splitlines()]
    t = {k: sum(l[k] for l in lines) for k in ["accepted", "errors", "seconds", "server_cpu_s"]}
    t["rate"] = t["accepted"] / t["seconds"]
    t["cpu_us"] = t["server_cpu_s"] * 1e6 / max(t["accepted"], 1)
    t["p99"] = max(l["latency"]["p99_ms"] for l in lines if l["latency"])
    return t
r = {n: total(n) for n in ["wsgate-ws", "wsgate-wss", "baseline-ws", "baseline-wss"]}
print(f"\nhandshakes, 50 loops, key {sys.argv[2]}:")
print(f"{'server':<14}{'handshakes/s':>14}{'CPU us/handshake':>18}{'worst slice p99 ms':>20}{'errors':>8}")
for n, t in r.items():
    print(f"{n:<14}{t['rate']:>14,.0f}{t['cpu_us']:>18,.0f}{t['p99']:>20.2f}{t['errors']:>8}")
ratio = lambda a, b, k: r[a][k] / r[b][k]
print()
print(f"wss/ws, wsgate:    rate {ratio('wsgate-wss', 'wsgate-ws', 'rate'):.2f}x, CPU per handshake {ratio('wsgate-wss', 'wsgate-ws', 'cpu_us'):.2f}x")
print(f"wss/ws, baseline:  rate {ratio('baseline-wss', 'baseline-ws', 'rate'):.2f}x, CPU per handshake {ratio('baseline-wss', 'baseline-ws', 'cpu_us'):.2f}x")
print(f"wsgate/baseline, wss: rate {ratio('wsgate-wss', 'baseline-wss', 'rate'):.2f}x, CPU per handshake {ratio('wsgate-wss', 'baseline-wss', 'cpu_us'):.2f}x")
print(f"wsgate/baseline, ws:  rate {ratio('wsgate-ws', 'baseline-ws', 'rate'):.2f}x, CPU per handshake {ratio('wsgate-ws', 'baseline-ws', 'cpu_us'):.2f}x")
PY
