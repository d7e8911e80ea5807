#!/usr/bin/env bash
# Prints Lookout's performance figures (see docs/performance.md): encoder
# milliseconds per frame, and in Chromium on loopback the time to first
# frame, presented fps, capture-to-display latency, CPU and memory.
# Run scripts/test.sh once first (it installs Chromium and Node packages).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p lookout --locked
cargo bench -p lookout --bench encoder --locked
(cd appliance/tests/browser && npm ci --no-audit --no-fund --loglevel=error)
export LOOKOUT_BIN="$PWD/target/release/lookout"
unshare -n sh -c 'ip link set lo up && ip route add default dev lo && cd appliance/tests/browser && node bench.mjs'
# Memory of 1,000 idle WSS connections (docs/security.md), release build.
LOOKOUT_BIN="$PWD/target/release/lookout" cargo test -p lookout --locked --test hostile_lan idle_websocket_memory_figure -- --nocapture 2>&1 | grep FIGURE
