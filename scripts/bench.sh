#!/usr/bin/env bash
# End-to-end benchmark: wsgate against the unauthenticated baseline, side by side, on
# 127.0.0.1 only. Every scenario runs on a fresh server process, for a bounded time.
# Prints one table of wsgate/baseline ratios, then the pending budget under attack (honest
# clients alone, then the same honest clients with silent sockets and a bad-token flood);
# raw results go to target/bench/.
#
# Every load generator connection carries a token with a `sub` of its own, so the per-user
# limits (32 open and 2 connects/s per `sub`) never throttle a scenario; any refusal, a 429
# included, counts as an error and is listed by status under the table.
#
# Usage: scripts/bench.sh [SECONDS_PER_SCENARIO]   (default 10; ~3 min after the build)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER=${1:-10}
OUT=target/bench
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.jsonl "$OUT"/*.log "$OUT"/*.rss
# Thousands of sockets: raise the open-files limit as far as this machine allows.
ulimit -n "$(ulimit -Hn)"
export WSGATE_SECRET="bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# With the redis feature, for the two-node scenario; without --redis it is a single node.
cargo build --release --quiet --features redis --bin wsgate --example baseline --example loadgen
WSGATE=target/release/wsgate
BASELINE=target/release/examples/baseline
LOADGEN=target/release/examples/loadgen
PORT=19100

SERVER_PID=""
OTHER_PID=""
stop_server() {
  for pid in $SERVER_PID $OTHER_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      wait "$pid" 2>/dev/null || true
    fi
  done
  SERVER_PID=""
  OTHER_PID=""
}
trap stop_server EXIT

# Starts a server on a new port; sets PORT and SERVER_PID. More wsgate flags may follow.
start_server() { # which [wsgate-flags...]
  PORT=$((PORT + 1))
  if [ "$1" = wsgate ]; then
    shift
    # The publisher is a load generator: lift the per-connection rate limit for it.
    "$WSGATE" serve --addr "127.0.0.1:$PORT" --rate-limit 1000000 --rate-burst 1000000 \
      --max-connections 19000 "$@" >/dev/null 2>"$OUT/wsgate.$PORT.log" &
  else
    "$BASELINE" "127.0.0.1:$PORT" >/dev/null 2>&1 &
  fi
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "server $1 did not start" >&2
  exit 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }

# One load run against PID on PORT; appends its JSON (plus the server's CPU) to NAME.jsonl.
measure() { # name pid port loadgen-args...
  local name=$1 pid=$2 port=$3
  shift 3
  local before after
  before=$(cpu_ticks "$pid")
  local result
  result=$("$LOADGEN" "$@" --url "ws://127.0.0.1:$port" --json)
  after=$(cpu_ticks "$pid")
  echo "${result%\}}, \"server_cpu_s\": $(( after - before ))e-2}" >>"$OUT/$name.jsonl"
}

run() { # name which loadgen-args...
  local name=$1 which=$2
  shift 2
  start_server "$which"
  measure "$name.$which" "$SERVER_PID" "$PORT" "$@"
  stop_server
  echo "  done: $name on $which" >&2
}

idle() { # which conns
  local which=$1 conns=$2
  start_server "$which"
  local before
  before=$(rss_kib)
  "$LOADGEN" idle --url "ws://127.0.0.1:$PORT" --conns "$conns" --hold 5 --json \
    >"$OUT/idle.$which.json" 2>"$OUT/idle.$which.log" &
  local gen=$!
  for _ in $(seq 1 600); do
    grep -q "connections open" "$OUT/idle.$which.log" 2>/dev/null && break
    sleep 0.1
  done
  sleep 1
  local after
  after=$(rss_kib)
  wait "$gen"
  echo "{\"rss_before_kib\": $before, \"rss_after_kib\": $after}" >"$OUT/idle.$which.rss.json"
  stop_server
  echo "  done: idle on $which" >&2
}

# Memory per room kept for its history (PROTOCOL.md §10): 2,000 rooms each filled with 100
# chat messages and left empty, on wsgate with --history 100 and, as the control, with
# --history 0 (every room freed at once), alternated twice.
kept_rooms() {
  for history in 0 100 0 100; do
    start_server wsgate --history "$history"
    local before after
    before=$(rss_kib)
    "$LOADGEN" history --url "ws://127.0.0.1:$PORT" --rooms 2000 --messages 100 --size 100 --hold 3 --json \
      >"$OUT/kept.$history.json.tmp" 2>"$OUT/kept.$history.log" &
    local gen=$!
    for _ in $(seq 1 600); do
      grep -q "rooms filled" "$OUT/kept.$history.log" 2>/dev/null && break
      sleep 0.1
    done
    sleep 1
    after=$(rss_kib)
    wait "$gen"
    local result
    result=$(cat "$OUT/kept.$history.json.tmp")
    echo "${result%\}}, \"history\": $history, \"rss_before_kib\": $before, \"rss_after_kib\": $after}" >>"$OUT/kept.jsonl"
    stop_server
  done
  rm -f "$OUT"/kept.*.json.tmp
  echo "  done: rooms kept for history" >&2
}

echo "Running each scenario for ${SECONDS_PER}s on wsgate and on the baseline..." >&2
# Handshakes and rejections: both servers up at once, short slices interleaved, so a change
# in the machine's load over the run hits all three measurements alike.
start_server baseline
OTHER_PID=$SERVER_PID
BASELINE_PORT=$PORT
start_server wsgate
SLICE=$(( SECONDS_PER / 5 > 0 ? SECONDS_PER / 5 : 1 ))
for _ in 1 2 3 4 5; do
  measure handshake.wsgate "$SERVER_PID" "$PORT" handshake --conns 50 --duration "$SLICE"
  measure handshake.baseline "$OTHER_PID" "$BASELINE_PORT" handshake --conns 50 --duration "$SLICE"
  measure reject.wsgate "$SERVER_PID" "$PORT" reject --conns 50 --duration "$SLICE"
done
stop_server
echo "  done: handshake and reject" >&2
for which in wsgate baseline; do
  run fanout1000 "$which" fanout --rooms 1 --subs 1000 --pubs 1 --rate 0 --duration "$SECONDS_PER"
  run fanout50x20 "$which" fanout --rooms 50 --subs 20 --pubs 1 --rate 50 --duration "$SECONDS_PER"
  idle "$which" 10000
done
kept_rooms

# Two wsgate nodes sharing one Redis, members split evenly between them.
if command -v redis-server >/dev/null 2>&1; then
  REDIS_PORT=$((PORT + 50))
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
  REDIS_PID=$!
  sleep 0.3
  for scenario in "fanout1000 --rooms 1 --subs 1000 --rate 0" "fanout50x20 --rooms 50 --subs 20 --rate 50"; do
    set -- $scenario
    name=$1
    shift
    ports=()
    pids=()
    for _ in 1 2; do
      PORT=$((PORT + 1))
      "$WSGATE" serve --addr "127.0.0.1:$PORT" --rate-limit 1000000 --rate-burst 1000000 \
        --redis "redis://127.0.0.1:$REDIS_PORT" >/dev/null 2>>"$OUT/wsgate.log" &
      pids+=($!)
      ports+=("$PORT")
    done
    sleep 0.5
    "$LOADGEN" fanout "$@" --pubs 1 --duration "$SECONDS_PER" --url "ws://127.0.0.1:${ports[0]}" \
      --url2 "ws://127.0.0.1:${ports[1]}" --json >"$OUT/$name.twonodes.json"
    kill -TERM "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
    echo "  done: $name on two nodes" >&2
  done
  kill -TERM "$REDIS_PID"
  wait "$REDIS_PID" 2>/dev/null || true
else
  echo "  skipped: two-node scenario (no redis-server on PATH; apt-get install redis-server)" >&2
fi

# The pending budget under attack: one fresh wsgate with a small pending budget. First honest
# clients alone, then the same honest load while 2x the budget of silent sockets (re-opened
# whenever the server evicts them) and a bad-token flood press on it. Server RSS is sampled
# every 0.5 s from /proc/PID/status.
ATTACK_PENDING=256
ATTACK_SECONDS=$(( SECONDS_PER * 2 ))
ATTACK_FLOOD=8
HONEST="--honest 20 --honest-rate 10 --timeout 5"
# The kernel's listen-queue counters (this network namespace): an overflowing accept queue
# drops SYNs, and a client whose SYN is dropped retries after 1 s.
tcp_counters() {
  awk '/^TcpExt:/ { if (!seen) { for (i = 2; i <= NF; i++) name[i] = $i; seen = 1 } else {
         for (i = 2; i <= NF; i++) if (name[i] ~ /^(ListenOverflows|ListenDrops|TCPSynRetrans)$/) v[name[i]] = $i } }
       END { printf "%d %d %d", v["ListenOverflows"], v["ListenDrops"], v["TCPSynRetrans"] }' /proc/net/netstat
}
attack_run() { # name loadgen-args...
  local name=$1
  shift
  local rss_file="$OUT/attack.$name.rss"
  : >"$rss_file"
  local before cpu_before tcp_before
  before=$(rss_kib)
  cpu_before=$(cpu_ticks "$SERVER_PID")
  read -r -a tcp_before <<<"$(tcp_counters)"
  "$LOADGEN" attack --url "ws://127.0.0.1:$PORT" --duration "$ATTACK_SECONDS" "$@" --json \
    >"$OUT/attack.$name.part" 2>"$OUT/attack.$name.log" &
  local gen=$!
  for _ in $(seq 1 $(( (ATTACK_SECONDS + 20) * 2 ))); do
    kill -0 "$gen" 2>/dev/null || break
    rss_kib >>"$rss_file"
    sleep 0.5
  done
  wait "$gen"
  local result after cpu_after
  result=$(cat "$OUT/attack.$name.part")
  after=$(rss_kib)
  cpu_after=$(cpu_ticks "$SERVER_PID")
  local tcp_after
  read -r -a tcp_after <<<"$(tcp_counters)"
  echo "${result%\}}, \"server_cpu_s\": $(( cpu_after - cpu_before ))e-2, \"rss_before_kib\": $before, \"rss_after_kib\": $after, \"rss_samples_kib\": [$(paste -sd, "$rss_file")], \"listen_overflows\": $(( tcp_after[0] - tcp_before[0] )), \"listen_drops\": $(( tcp_after[1] - tcp_before[1] )), \"syn_retransmits\": $(( tcp_after[2] - tcp_before[2] ))}" \
    >"$OUT/attack.$name.json"
  echo "  done: attack step, $name" >&2
}
start_server wsgate --max-pending "$ATTACK_PENDING"
sleep 1
attack_run honest $HONEST
attack_run attacked $HONEST --silent $(( ATTACK_PENDING * 2 )) --flood "$ATTACK_FLOOD"
stop_server

python3 - "$OUT" "$ATTACK_PENDING" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
load = lambda name: json.loads((out / f"{name}.json").read_text())
def runs(name):
    """Sums the slices of one measurement: counts, seconds and server CPU add up."""
    lines = [json.loads(l) for l in (out / f"{name}.jsonl").read_text().splitlines()]
    total = dict(lines[0])
    if "failures" in total:
        total["failures"] = {}
        for l in lines:
            for kind, n in l.get("failures", {}).items():
                total["failures"][kind] = total["failures"].get(kind, 0) + n
    for key in ["accepted", "rejected", "errors", "seconds", "server_cpu_s", "received", "lost", "lagged", "expected"]:
        if key in total:
            total[key] = sum(l[key] for l in lines)
    for key in ["accepted", "rejected"]:
        if key in total:
            total[key + "_per_s"] = total[key] / total["seconds"]
    if "received" in total:
        total["deliveries_per_s"] = total["received"] / total["seconds"]
    assert len(lines) == 1 or "latency" not in total or total["scenario"] != "fanout", "one fan-out run per file"
    return total
w, b = {}, {}
for name in ["handshake", "fanout1000", "fanout50x20"]:
    w[name], b[name] = runs(f"{name}.wsgate"), runs(f"{name}.baseline")
reject = runs("reject.wsgate")
rows = []
def row(what, ours, theirs, goal, ok, fmt="{:,.0f}"):
    ratio = ours / theirs if theirs else float("nan")
    rows.append((what, fmt.format(ours), fmt.format(theirs), f"{ratio:.2f}x", goal, "met" if ok else "NOT MET"))
hs_w, hs_b = w["handshake"]["accepted_per_s"], b["handshake"]["accepted_per_s"]
row("handshakes/s, C=50 (errors: %d / %d)" % (w["handshake"]["errors"], b["handshake"]["errors"]), hs_w, hs_b, ">= 0.9x baseline", hs_w >= 0.9 * hs_b)
rj = reject["rejected_per_s"]
rows.append(("bad-token rejections/s vs own accepted/s", f"{rj:,.0f}", f"{hs_w:,.0f} (wsgate)", f"{rj / hs_w:.2f}x", ">= 1.5x", "met" if rj >= 1.5 * hs_w else "NOT MET"))
per_op = lambda r, key: r["server_cpu_s"] * 1e6 / r[key]
rows.append(("server CPU us per handshake / per rejection", f"{per_op(w['handshake'], 'accepted'):.0f} / {per_op(reject, 'rejected'):.0f}", f"{per_op(b['handshake'], 'accepted'):.0f} / -", "", "(for reference)", ""))
f_w, f_b = w["fanout1000"], b["fanout1000"]
no_loss = f_w["lost"] == 0 and f_w["lagged"] == 0
row("fan-out deliveries/s, R=1 N=1000 (lost: %d / %d, refused: %d)" % (f_w["lost"], f_b["lost"], f_w["refused_by_server"]), f_w["deliveries_per_s"], f_b["deliveries_per_s"], ">= 2x, no loss", f_w["deliveries_per_s"] >= 2 * f_b["deliveries_per_s"] and no_loss)
cpu = lambda r: r["server_cpu_s"] * 1e6 / (r["received"] / 1000)  # server CPU us per 1000 deliveries
row("server CPU us per 1,000 deliveries (R=1 N=1000)", cpu(f_w), cpu(f_b), "lower", cpu(f_w) < cpu(f_b))
l_w, l_b = w["fanout50x20"], b["fanout50x20"]
row("p99 latency ms, R=50 N=20 rate=50 (lost: %d / %d, refused: %d)" % (l_w["lost"], l_b["lost"], l_w["refused_by_server"]), l_w["latency"]["p99_ms"], l_b["latency"]["p99_ms"], "<= 5 ms, no loss", l_w["latency"]["p99_ms"] <= 5 and l_w["lost"] == 0, "{:.2f}")
per_conn = {}
for which in ["wsgate", "baseline"]:
    rss, idle = load(f"idle.{which}.rss"), load(f"idle.{which}")
    per_conn[which] = (rss["rss_after_kib"] - rss["rss_before_kib"]) / (idle["conns"] - idle["errors"])
row("idle RSS KiB per connection, N=10000 (errors: %d / %d)" % (load("idle.wsgate")["errors"], load("idle.baseline")["errors"]), per_conn["wsgate"], per_conn["baseline"], "<= 8 KiB", per_conn["wsgate"] <= 8, "{:.2f}")
kept = [json.loads(l) for l in (out / "kept.jsonl").read_text().splitlines()]
grown = lambda h: [(k["rss_after_kib"] - k["rss_before_kib"]) / k["rooms"] for k in kept if k["history"] == h]
with_h, without_h = sum(grown(100)) / 2, sum(grown(0)) / 2
rows.append(("RSS KiB per empty room kept with 100 frames of history (2,000 rooms, client message %d B; errors: %d)" % (kept[0]["frame_bytes"], sum(k["errors"] for k in kept)), f"{with_h:.1f}", f"{without_h:.1f} (--history 0)", "", "(report)", ""))
widths = [max(len(str(r[i])) for r in rows + [("what", "wsgate", "baseline", "ratio", "goal", "")]) for i in range(6)]
header = ("what", "wsgate", "baseline", "ratio", "goal", "")
print()
for r in [header] + rows:
    print("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)))
two = out / "fanout1000.twonodes.json"
if two.exists():
    t1, t2 = load("fanout1000.twonodes"), load("fanout50x20.twonodes")
    rows.append(("two nodes via Redis vs one node: deliveries/s R=1 N=1000 (lost: %d)" % t1["lost"], f'{t1["deliveries_per_s"]:,.0f}', f'{f_w["deliveries_per_s"]:,.0f} (1 node)', f'{t1["deliveries_per_s"] / f_w["deliveries_per_s"]:.2f}x', "(report)", ""))
    rows.append(("two nodes via Redis vs one node: p99 ms R=50 N=20 (lost: %d)" % t2["lost"], f'{t2["latency"]["p99_ms"]:.2f}', f'{l_w["latency"]["p99_ms"]:.2f} (1 node)', "", "(report)", ""))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(6)]
    print()
    for r in rows[-2:]:
        print("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)))
# Every failure by kind (a 429 or 503 would show here), and lagged notices, loudly.
problems = []
for f in sorted(out.glob("*.json*")):
    if f.name == "summary.json":
        continue
    for line in f.read_text().splitlines():
        r = json.loads(line)
        for key in ["failures", "flood_other"]:
            if r.get(key) and not (key == "failures" and r.get("scenario") == "attack"):
                side = " (the attacker's own flood, for information)" if key == "flood_other" else ""
                problems.append(f"{f.name}: {key} {r[key]}{side}")
        if r.get("lagged") or r.get("refused_by_server"):
            problems.append(f"{f.name}: lagged {r.get('lagged')} refused_by_server {r.get('refused_by_server')}")
print()
print("errors by kind:" + (" none" if not problems else ""))
for p in problems:
    print("  " + p)

# The attack step.
a = {name: load(f"attack.{name}") for name in ["honest", "attacked"]}
def rss_summary(r):
    s = r["rss_samples_kib"] or [r["rss_before_kib"]]
    half = s[len(s) // 2]
    return s[0], half, s[-1], max(s)
arows = [("what", "no attack", "under attack", "goal", "")]
ok_all = all(r["success_pct"] == 100.0 for r in a.values())
arows.append(("honest success % (ok / attempts)", *[f'{r["success_pct"]:.2f} ({r["accepted"]}/{r["attempts"]})' for r in a.values()], "100 %", "met" if ok_all else "NOT MET"))
arows.append(("honest failures by kind", *[json.dumps(r["failures"]) if r["failures"] else "none" for r in a.values()], "", ""))
arows.append(("honest p50 ms", *[f'{r["latency"]["p50_ms"]:.2f}' for r in a.values()], "", ""))
p99_ok = all(r["latency"]["p99_ms"] <= 20 for r in a.values())
arows.append(("honest p99 ms", *[f'{r["latency"]["p99_ms"]:.2f}' for r in a.values()], "<= 20 ms", "met" if p99_ok else "NOT MET"))
arows.append(("honest handshakes taking >= 1 s (a dropped SYN)", *[f'{r["over_1s"]} ({100 * r["over_1s"] / max(r["accepted"], 1):.2f} %)' for r in a.values()], "", ""))
arows.append(("honest max ms", *[f'{r["latency"]["max_ms"]:.2f}' for r in a.values()], "", ""))
rs = {k: rss_summary(r) for k, r in a.items()}
arows.append(("server RSS KiB: start / mid / end / peak", *["%d / %d / %d / %d" % rs[k] for k in a], "flat", ""))
arows.append(("server RSS KiB after the run", *[str(r["rss_after_kib"]) for r in a.values()], "", ""))
arows.append(("silent reopens/s, flood rejections/s", *[f'{r["silent_reopens_per_s"]:,.0f}, {r["flood_rejected_per_s"]:,.0f}' for r in a.values()], "", ""))
arows.append(("kernel: listen overflows / SYN retransmits", *[f'{r["listen_overflows"]} / {r["syn_retransmits"]}' for r in a.values()], "", ""))
arows.append(("server CPU s over the run", *[f'{r["server_cpu_s"]:.2f}' for r in a.values()], "", ""))
aw = [max(len(str(r[i])) for r in arows) for i in range(5)]
print()
print("pending budget %d under attack: %d honest loops at %d/s each; attack: %d silent sockets, %d flood loops, %d s" % (
    int(sys.argv[2]), a["attacked"]["honest"], a["attacked"]["honest_rate"], a["attacked"]["silent"], a["attacked"]["flood"], a["attacked"]["seconds"]))
for r in arows:
    print("  ".join(str(c).ljust(aw[i]) if i == 0 else str(c).rjust(aw[i]) for i, c in enumerate(r)))
(out / "summary.json").write_text(json.dumps({"rows": rows, "attack": arows}, indent=1))
PY
