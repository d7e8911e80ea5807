#!/usr/bin/env bash
# Runs every check and test of the project. Installs missing system packages
# first (Debian 12), so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# step NAME: announces a stage, with the time since the start and the free disk
# (a CI machine's disk can be small; a full one shows here first).
step() {
    printf '\n==> [%dm%02ds, %s free] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) \
        "$(df -h --output=avail . | tail -1 | tr -d ' ')" "$*"
}

# Slow stages a contributor may skip locally, by name:
#   LOOKOUT_SKIP="browser lan libcamera bitbake aarch64 fuzz" bash scripts/test.sh
#   bash scripts/test.sh --quick        (skips every slow stage: the list above)
# CI (CI=true) never skips: a green CI means every stage ran.
SLOW_STAGES="browser lan libcamera bitbake aarch64 fuzz"
[ "${1:-}" = "--quick" ] && LOOKOUT_SKIP="$SLOW_STAGES"
LOOKOUT_SKIP="${LOOKOUT_SKIP:-}"
if [ -n "$LOOKOUT_SKIP" ] && [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI=true, so LOOKOUT_SKIP=\"$LOOKOUT_SKIP\" is ignored: every stage runs" >&2
    LOOKOUT_SKIP=""
fi
# skip STAGE: true (and says so loudly) when the contributor asked to skip STAGE.
skip() {
    case " ${LOOKOUT_SKIP//,/ } " in
    *" $1 "*) printf '\n==> SKIPPED stage "%s" (LOOKOUT_SKIP): not tested in this run\n' "$1"; return 0 ;;
    esac
    return 1
}

# A CI run builds once from scratch: incremental state would only fill the
# disk (about 4 GB for the test binaries).
[ "${CI:-}" = "true" ] && export CARGO_INCREMENTAL=0

# shellcheck source=lib/apt.sh
. scripts/lib/apt.sh

# nasm: openh264 builds its x86 SIMD code with it (about twice as fast).
apt_install build-essential pkg-config nasm chromium iproute2 util-linux \
    zbar-tools librsvg2-bin mtools dosfstools fdisk e2fsprogs avahi-daemon avahi-utils dbus \
    wpasupplicant nftables curl
# The Prometheus project's OpenMetrics parser, for tests/metrics_endpoint.rs
# (tests/parse_metrics.py runs it with Debian's /usr/bin/python3).
apt_install python3 python3-prometheus-client
# aiortc, the second WHEP client (tests/whep_aiortc.rs runs tests/whep/whep_client.py
# with it), in a virtualenv made once and again only when its requirements change.
# shellcheck source=lib/yocto-venv.sh
. scripts/lib/yocto-venv.sh
yocto_venv target/whep-venv appliance/tests/whep/requirements.txt
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
# playwright-core (the browser tests) needs Node.js 20 or newer; Debian 12's own is 18.
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || {
    echo "test.sh: Node.js $(node --version) is too old for the browser tests: install Node.js 20 or newer" >&2
    exit 1
}

step "cargo fmt --check"
cargo fmt --all --check

step "rust-version is true of the lock file (cargo metadata)"
python3 scripts/check-rust-version.py

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Built once, as the tests build them: `cargo build` alone would resolve
# other features (no dev-dependencies) and `cargo test` would rebuild both.
step "build the tests, lookout and lookout-provision"
cargo test --workspace --locked --no-run
step "Yocto layer and systemd integration checks"
bash scripts/yocto-checks.sh target/debug/lookout
if ! skip bitbake; then
    step "real bitbake, offline: the layer parses and lookout-image resolves for every machine (docs/yocto.md)"
    bash scripts/yocto/bitbake-check.sh ../shared/yocto-layers
fi

step "cargo test"
cargo test --workspace --locked

# The first build of the fuzz targets compiles the dependency tree once more
# (release, instrumented); then 4 targets x 20 s.
if ! skip fuzz; then
    step "fuzz targets, 20 s each (signaling message, Host header, identity file, Wi-Fi file)"
    bash scripts/fuzz.sh 20
    # Its instrumented release build is not used again: on CI, give the disk back.
    [ "${CI:-}" = "true" ] && rm -rf fuzz/target
fi

# Built above; the browser tests run the real binary.
export LOOKOUT_BIN="$PWD/target/debug/lookout"
[ -x "$LOOKOUT_BIN" ] || { echo "missing $LOOKOUT_BIN" >&2; exit 1; }
if ! skip browser; then
    (cd appliance/tests/browser && npm ci --no-audit --no-fund --loglevel=error)
    # browser_tests FILE...: node's test runner in a network namespace with only loopback.
    browser_tests() {
        unshare -n sh -c 'ip link set lo up && ip route add default dev lo && cd appliance/tests/browser && exec node --test --test-concurrency=1 "$@"' sh "$@"
    }
    step "browser end-to-end tests (Chromium, in a network namespace with only loopback)"
    browser_tests viewer.test.mjs supervision.test.mjs secret_log.test.mjs cross-origin.test.mjs hostile.test.mjs
    # About 50 s.
    step "browser: the viewer in emulated phones (320x568 to 844x390, touch, axe-core)"
    browser_tests phone.test.mjs
    # About 65 s: a minute of a camera that loses every third frame (issue 13, capture-clock timing).
    step "browser: RTP timestamps follow capture time, latency flat with lost frames (Chromium, 60 s)"
    browser_tests timing.test.mjs
    # About 20 s: Chromium negotiates the playout-delay extension and shows frames at once (issue 14).
    step "browser: no playout delay (Chromium shows each frame as soon as it is decoded)"
    browser_tests playout.test.mjs
    # About 25 s: a viewer held to the base temporal layer decodes every frame it gets (issue 13).
    step "browser: a base-layer-only viewer decodes at half the frame rate, no freezes (Chromium)"
    browser_tests layers.test.mjs
    # About 5 s: /metrics counters move and /snapshot.jpg decodes while Chromium watches (issue 15).
    step "browser: /metrics and /snapshot.jpg while Chromium watches"
    browser_tests metrics.test.mjs
    # About 7 s: the whip-whep package's WHEPClient on another origin plays live frames (issue 15).
    step "browser: WHEP with whip-whep on another origin (live frames, DELETE frees the slot, CORS)"
    browser_tests whep.test.mjs
    # About 6 s: a typo'd settings file; the camera streams and the page names file, line and key (issue 15).
    step "browser: settings-file problems shown on the viewer page (desktop and a 320x568 phone)"
    browser_tests settings.test.mjs
fi

if ! skip lan; then
    step "browser across a virtual LAN (two network namespaces, defaults, mDNS-hidden browser addresses)"
    (cd appliance/tests/browser && npm ci --no-audit --no-fund --loglevel=error)
    bash appliance/tests/browser/lan-test.sh "$LOOKOUT_BIN"
    # About 70 s: issue 13's two viewers, one behind a 600 kbit/s link.
    step "two viewers across a virtual LAN, one on a shaped link (tc tbf 600 kbit/s): both keep playing"
    SHAPED_CHECK=1 bash appliance/tests/browser/shaped-bench.sh "$LOOKOUT_BIN"
fi

if ! skip libcamera; then
    step "libcamera source against libcamera's virtual camera (builds libcamera 0.7 once)"
    bash scripts/libcamera-test.sh
fi

if ! skip aarch64; then
    step "aarch64: cross-build with libcamera, unit and capture tests in an emulated arm64 machine, Chromium decodes its stream"
    bash scripts/aarch64.sh
fi

step "every stage passed"
