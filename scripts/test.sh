#!/usr/bin/env bash
# Runs every check and test of the project. Installs missing system packages
# first (Debian 12), so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# shellcheck source=lib/apt.sh
. scripts/lib/apt.sh

# nasm: openh264 builds its x86 SIMD code with it (about twice as fast).
apt_install build-essential pkg-config nasm chromium iproute2 util-linux \
    zbar-tools librsvg2-bin mtools dosfstools fdisk e2fsprogs avahi-daemon avahi-utils dbus \
    wpasupplicant nftables curl
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
# playwright-core (the browser tests) needs Node.js 20 or newer; Debian 12's own is 18.
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || {
    echo "test.sh: Node.js $(node --version) is too old for the browser tests: install Node.js 20 or newer" >&2
    exit 1
}

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Built once, as the tests build them: `cargo build` alone would resolve
# other features (no dev-dependencies) and `cargo test` would rebuild both.
step "build the tests, lookout and lookout-provision"
cargo test --workspace --locked --no-run
step "Yocto layer and systemd integration checks"
bash scripts/yocto-checks.sh target/debug/lookout

step "cargo test"
cargo test --workspace --locked

step "browser end-to-end tests (Chromium, in a network namespace with only loopback)"
# Built above; the browser tests run the real binary.
export LOOKOUT_BIN="$PWD/target/debug/lookout"
[ -x "$LOOKOUT_BIN" ] || { echo "missing $LOOKOUT_BIN" >&2; exit 1; }
(cd appliance/tests/browser && npm ci --no-audit --no-fund --loglevel=error)
unshare -n sh -c 'ip link set lo up && ip route add default dev lo && cd appliance/tests/browser && node --test --test-concurrency=1 viewer.test.mjs'

step "browser across a virtual LAN (two network namespaces, defaults, mDNS-hidden browser addresses)"
bash appliance/tests/browser/lan-test.sh "$LOOKOUT_BIN"

step "libcamera source against libcamera's virtual camera (builds libcamera 0.7 once)"
bash scripts/libcamera-test.sh
