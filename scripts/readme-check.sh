#!/usr/bin/env bash
# Runs README.md's commands as written, the ones that need nothing beyond this machine:
# the dev-mode quickstart (`cargo run --release`, then the terminal lines its banner prints)
# and the production block (secret, serve, token). The several-nodes block names a remote
# Redis and is not run. Every wait is bounded; servers are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pids=()
cleanup() {
  # Each server runs in its own process group (setsid): `cargo run` and the server it starts.
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
fail() { echo "readme-check: $*" >&2; for f in "$work"/*; do echo "== $f" >&2; tail -n 20 "$f" >&2; done; exit 1; }

# Waits up to $2 seconds for file $1 to contain $3.
wait_for() {
  for _ in $(seq 1 "$(($2 * 10))"); do grep -q -- "$3" "$1" 2>/dev/null && return 0; sleep 0.1; done
  fail "no '$3' in $1 after $2 s"
}

# The lines of README's N-th ```sh block.
block() { awk -v want="$1" '/^```sh/{n++; p=(n==want); next} /^```/{p=0} p' README.md; }

build_log="$work/build.log"
cargo build --release --quiet --bin wsgate 2>"$build_log" || fail "release build failed"

echo "README quickstart: $(block 2)"
[ "$(block 2)" = "cargo run --release" ] || fail "the quickstart's first block changed; update this script"
env -u WSGATE_SECRET setsid bash -c "$(block 2)" >"$work/dev.out" 2>"$work/dev.err" &
pids+=($!)
wait_for "$work/dev.out" 120 "Stop with Ctrl-C"
alice=$(grep ' connect ws://' "$work/dev.out" | grep -v curl | head -n 1)
bob=$(grep ' connect ws://' "$work/dev.out" | grep 'sub=bob' | head -n 1)
[ -n "$alice" ] && [ -n "$bob" ] || fail "the banner has no connect lines"
echo "hello from the readme" | timeout 20 bash -c "$alice" >"$work/alice.out" || fail "alice's line: exit $?"
grep -q '"username":"alice","message":"hello from the readme"' "$work/alice.out" || fail "alice got no echo"
echo "hi" | timeout 20 bash -c "$bob" >"$work/bob.out" || fail "bob's line: exit $?"
grep -q '"username":"bob","message":"hi"' "$work/bob.out" || fail "bob got no echo"
curl -sf http://127.0.0.1:8080/healthz | grep -q ok || fail "/healthz"
cleanup; pids=()
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:8080/healthz >/dev/null 2>&1 || break; sleep 0.1; done

echo "README production block:"
block 3 | sed 's/^/  /'
# Run as written, in one shell (the block puts the server in the background itself), in a
# process group of its own so the server goes with it.
setsid bash -c "set -euo pipefail; $(block 3)" >"$work/prod.out" 2>"$work/prod.err" &
pids+=($!)
wait_for "$work/prod.out" 180 '"message":"hello"'
curl -sf http://127.0.0.1:8080/healthz | grep -q ok || fail "/healthz in production mode"
echo "1 passed, 0 failed: README commands ran as written"
