#!/usr/bin/env bash
# The browser tests: builds wsgate (with TLS, for the https:// test), makes sure Chromium and
# playwright-core are there, runs them.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --quiet --features tls --bin wsgate
if [ ! -x /usr/bin/chromium ]; then
  echo "Chromium is missing: apt-get install -y chromium" >&2
  exit 1
fi
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
npm test
