#!/usr/bin/env bash
# Prints Lookout's performance figures (see docs/performance.md): encoder
# milliseconds per frame, and in Chromium on loopback the time to first
# frame, presented fps, capture-to-display latency, CPU and memory, and the
# first-frame timeline and 60 s latency series (latency-bench.mjs).
# Run scripts/test.sh once first (it installs Chromium and Node packages).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p lookout --locked
cargo bench -p lookout --bench encoder --locked
(cd appliance/tests/browser && npm ci --no-audit --no-fund --loglevel=error)
export LOOKOUT_BIN="$PWD/target/release/lookout"
unshare -n sh -c 'ip link set lo up && ip route add default dev lo && cd appliance/tests/browser && node bench.mjs'
# What a person sees: navigation -> first presented frame with its timeline,
# and 60 s of per-frame latency, at 720p30 and 1080p30 (about 4 minutes).
unshare -n sh -c 'ip link set lo up && ip route add default dev lo && cd appliance/tests/browser && node latency-bench.mjs'
# Memory of 1,000 idle WSS connections (docs/security.md), release build.
LOOKOUT_BIN="$PWD/target/release/lookout" cargo test -p lookout --locked --test hostile_lan idle_websocket_memory_figure -- --nocapture 2>&1 | grep FIGURE
