#!/usr/bin/env bash
# The Raspberry Pi's code path, compiled and run here (issue 12):
#
#   1. installs the cross toolchain (Debian 12 packages, idempotent):
#      rustc-web/cargo-web 1.96 from bookworm-security with the arm64 std,
#      gcc/g++-aarch64-linux-gnu, qemu-system-aarch64 from bookworm-backports
#   2. cross-builds libcamera 0.7 for arm64 once (scripts/libcamera.sh with
#      LIBCAMERA_ARCH=arm64, cached in .ci-cache), then `lookout` with the
#      `libcamera` feature, `lookout-provision` (release), the workspace's
#      unit tests and the libcamera capture test for
#      aarch64-unknown-linux-gnu, in target/aarch64, with Debian's cargo-web
#      (rustup's toolchain has no aarch64 std here)
#   3. boots an emulated aarch64 machine (scripts/aarch64/guest.sh) and runs
#      the unit tests and the capture test (libcamera's virtual camera) in
#      it, as aarch64 code
#   4. boots it again with a network link to a namespace on the host, runs
#      the aarch64 `lookout` there (test pattern, 640x480 at 10 fps) and has
#      headless Chromium decode its stream and read the timestamp strip
#      (appliance/tests/browser/aarch64.spec.mjs)
#
# Usage: scripts/aarch64.sh [build|unit|e2e|all]   (default all)
# Needs root (packages, ip netns, tap). See docs/aarch64.md.
# Environment (optional): AARCH64_TARGET_DIR (default target/aarch64),
# AARCH64_UNIT_TIMEOUT / AARCH64_E2E_TIMEOUT (guest time limits, seconds),
# LOOKOUT_PROVISION_BIN (host lookout-provision that makes the test identity;
# default target/debug/lookout-provision, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WHAT="${1:-all}"

TARGET=aarch64-unknown-linux-gnu
TARGET_DIR="${AARCH64_TARGET_DIR:-$ROOT/target/aarch64}"
OUT="$TARGET_DIR/$TARGET/release"
RUST_VERSION_DEB="1.96.0+dfsg1-1~deb12u2"
WORK="$TARGET_DIR/guest-work"

step() { printf '\n==> aarch64: %s\n' "$*"; }
die() { printf 'aarch64.sh: FAILED: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (apt, ip netns, tap devices)"

# --- 1. toolchain -----------------------------------------------------------
# shellcheck source=lib/apt.sh
. scripts/lib/apt.sh
# shellcheck source=lib/apt-private.sh
. scripts/lib/apt-private.sh
APT_PRIVATE_DIR="$ROOT/.ci-cache/apt-aarch64"

step "toolchain"
apt_install python3 cpio e2fsprogs iproute2 curl file chromium
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
# Private apt lists (the machine's sources stay as they are): bookworm's own
# suites, its security suite (rustc-web 1.96) and backports (qemu 10).
apt_private_setup "bookworm bookworm-updates bookworm-backports" "bookworm-security" "amd64 arm64"
installed() { [ "$(dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null)" = "install ok installed $2" ]; }
need=()
for p in rustc-web cargo-web libstd-rust-web-dev libstd-rust-web-dev:arm64; do
    installed "$p" "$RUST_VERSION_DEB" || need+=("$p=$RUST_VERSION_DEB")
done
for p in gcc-aarch64-linux-gnu g++-aarch64-linux-gnu; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
# Debian 12's own qemu-system-arm (7.2) conflicts with backports' qemu
# packages once one of them is installed; take all of them from backports.
case "$(dpkg-query -W -f='${Version}' qemu-system-arm 2>/dev/null || true)" in
    *bpo12*) ;;
    *) need+=(qemu-system-arm/bookworm-backports qemu-system-data/bookworm-backports qemu-system-common/bookworm-backports) ;;
esac
[ ${#need[@]} -eq 0 ] || apt_private_install "${need[@]}"
echo "  $(/usr/bin/rustc --version), $(aarch64-linux-gnu-gcc --version | head -n 1), $(qemu-system-aarch64 --version | head -n 1)"

# Debian's Rust (not rustup's, which has no aarch64 std here). The host's
# own cargo stays available for host tools.
HOST_CARGO=$(command -v cargo || echo /usr/bin/cargo)
export PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO=/usr/bin/cargo
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
xcargo() { nice -n 10 /usr/bin/cargo "$@" --locked --release --target "$TARGET" --target-dir "$TARGET_DIR"; }

# --- 2. cross-build ---------------------------------------------------------
step "libcamera 0.7 for arm64 (cross-built once, cached in .ci-cache)"
LIBCAMERA_ARCH=arm64 bash scripts/libcamera.sh
# shellcheck source=/dev/null
. "$ROOT/.ci-cache/libcamera-arm64.env"
unset LD_LIBRARY_PATH # arm64 libraries: nothing on the host can use them
LIBCAMERA_ARM64_PREFIX="$LIBCAMERA_PREFIX"
mkdir -p "$LIBCAMERA_PREFIX/share/libcamera/pipeline/virtual"
cp scripts/libcamera-virtual.yaml "$LIBCAMERA_PREFIX/share/libcamera/pipeline/virtual/virtual.yaml"
# bindgen (libcamera-sys) parses the headers as aarch64 code.
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--target=aarch64-linux-gnu"
FEATURES=(--features lookout/libcamera)

# One build for the tests and `lookout`: cargo builds a package's binaries
# for its integration tests, with the features the tests resolve (as
# scripts/test.sh does for the x86-64 binary); a separate `cargo build` would
# resolve other features and build the WebRTC stack twice.
step "cross-building lookout (with libcamera), the unit tests and the capture test (release, $TARGET)"
unit_tests=$(xcargo test --workspace --lib --test libcamera_capture --no-run "${FEATURES[@]}" --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg.get("profile", {}).get("test"):
        print(msg["executable"])
')
[ -n "$unit_tests" ] || die "cargo produced no test executables"
echo "$unit_tests" | sed 's/^/  /'
step "cross-building lookout-provision (release, $TARGET)"
xcargo build -p lookout-provisioning --bin lookout-provision
for bin in lookout lookout-provision; do
    file "$OUT/$bin" | grep -q 'ARM aarch64' || die "$OUT/$bin is not an aarch64 executable"
done
neon=$(aarch64-linux-gnu-nm "$OUT/lookout" | grep -c '_AArch64_neon$' || true)
echo "  lookout holds $neon of openh264's *_AArch64_neon routines"
[ "$neon" -gt 100 ] || die "openh264's NEON assembly is missing from the aarch64 lookout ($neon routines)"

[ "$WHAT" = build ] && exit 0

# --- 3. the guest -----------------------------------------------------------
# shellcheck source=aarch64/guest.sh
. scripts/aarch64/guest.sh
step "guest: kernel and initramfs"
# shellcheck disable=SC2086
GUEST_LIB_DIRS="$LIBCAMERA_ARM64_PREFIX/lib" guest_prepare "$OUT/lookout" "$OUT/lookout-provision" $unit_tests

if [ "$WHAT" = all ] || [ "$WHAT" = unit ]; then
    step "unit tests in the aarch64 guest"
    rm -rf "$WORK" && mkdir -p "$WORK/tests"
    for t in $unit_tests; do cp "$t" "$WORK/tests/"; done
    # libcamera finds virtual.yaml under its compiled-in prefix (a host path):
    # the job links that path to the copy on the work disk.
    cp -a "$LIBCAMERA_ARM64_PREFIX/share" "$WORK/libcamera-share"
    {
        echo "LIBCAMERA_PREFIX='$LIBCAMERA_ARM64_PREFIX'"
        cat <<'JOB'
# Runs every test executable (the libcamera capture test one at a time);
# fails if any fails.
mkdir -p "$LIBCAMERA_PREFIX"
ln -s /work/libcamera-share "$LIBCAMERA_PREFIX/share"
export LIBCAMERA_LOG_LEVELS='*:WARN'
# No media subsystem in this kernel: libcamera's camera manager needs
# /sys/bus/media/devices to exist (the virtual camera needs no device).
[ -d /sys/bus/media/devices ] || { mount -t tmpfs -o size=1m lookout-media-bus /sys/bus && mkdir -p /sys/bus/media/devices; }
failed=""
for t in /work/tests/*; do
    echo "guest: === $(basename "$t")"
    case "$(basename "$t")" in
        libcamera_capture-*) "$t" --test-threads=1 ;;
        *) "$t" --test-threads=2 ;;
    esac || failed="$failed $(basename "$t")"
done
[ -z "$failed" ] || { echo "guest: FAILED:$failed"; exit 1; }
echo "guest: all unit tests passed"
JOB
    } >"$WORK/job.sh"
    start=$(date +%s)
    guest_run "$WORK" "${AARCH64_UNIT_TIMEOUT:-1200}" || die "unit tests failed in the aarch64 guest (console: $WORK.console.log)"
    echo "  unit tests in the guest: $(( $(date +%s) - start )) s"
fi

if [ "$WHAT" = all ] || [ "$WHAT" = e2e ]; then
    step "end to end: aarch64 lookout in the guest -> Chromium on the host"
    e2e_dir=$(mktemp -d)
    ns="lka64$$"; tap="lka64t$$"
    guest_pid=""
    e2e_cleanup() {
        [ -n "$guest_pid" ] && kill "$guest_pid" 2>/dev/null && wait "$guest_pid" 2>/dev/null
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "$e2e_dir"
    }
    trap e2e_cleanup EXIT
    # The identity (room secret) is made on the host, so the test knows the
    # secret without the guest ever printing it.
    # scripts/test.sh has built it (its tests run it); alone, build it here.
    provision="${LOOKOUT_PROVISION_BIN:-$ROOT/target/debug/lookout-provision}"
    if [ ! -x "$provision" ]; then
        (env -u RUSTC -u RUSTDOC -u CARGO "$HOST_CARGO" build --locked -p lookout-provisioning --bin lookout-provision)
        provision="$ROOT/target/debug/lookout-provision"
    fi
    "$provision" new --out "$e2e_dir/factory" --count 1 >/dev/null
    identity=$(ls "$e2e_dir"/factory/*/identity.json)
    rm -rf "$WORK" && mkdir -p "$WORK/state"
    cp "$OUT/lookout" "$WORK/lookout"
    install -m 600 "$identity" "$WORK/state/identity.json"
    cat >"$WORK/job.sh" <<'JOB'
# Runs lookout (test pattern) until the host connects to port 9999, then
# stops it with SIGTERM and checks that it exited cleanly.
NO_COLOR=1 /work/lookout --listen 10.98.0.2:8443 --state-dir /work/state --camera test-pattern \
    --resolution 640x480 --fps 10 --no-mdns --no-webrtc-mdns --boot-identity-dir /nonexistent \
    >/work/lookout.log 2>&1 &
pid=$!
echo "guest: lookout started (pid $pid); waiting for the host to finish"
nc -l -p 9999 >/dev/null
kill -TERM "$pid"
wait "$pid"
status=$?
echo "guest: lookout exited with status $status; its log (last 30 lines):"
tail -n 30 /work/lookout.log
exit $status
JOB
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" tuntap add dev "$tap" mode tap
    ip -n "$ns" addr add 10.98.0.1/24 dev "$tap"
    ip -n "$ns" link set "$tap" up
    guest_run "$WORK" "${AARCH64_E2E_TIMEOUT:-600}" "$ns" "$tap" 10.98.0.2/24 10.98.0.1 >"$e2e_dir/guest.out" 2>&1 &
    guest_pid=$!
    start=$(date +%s)
    until ip netns exec "$ns" curl -sk -o /dev/null --max-time 5 https://10.98.0.2:8443/; do
        kill -0 "$guest_pid" 2>/dev/null || { cat "$e2e_dir/guest.out" >&2; die "the guest ended before lookout served HTTPS"; }
        [ $(( $(date +%s) - start )) -lt 300 ] || { cat "$e2e_dir/guest.out" >&2; die "lookout in the guest did not serve HTTPS within 300 s"; }
        sleep 2
    done
    echo "  lookout in the guest serves HTTPS after $(( $(date +%s) - start )) s"
    (cd appliance/tests/browser && npm ci --no-audit --no-fund --loglevel=error)
    status=0
    A64_URL="https://10.98.0.2:8443/" A64_IDENTITY="$identity" ip netns exec "$ns" \
        node --test --test-concurrency=1 appliance/tests/browser/aarch64.spec.mjs || status=$?
    # Tell the guest to stop lookout, then collect its verdict.
    ip netns exec "$ns" bash -c 'exec 3<>/dev/tcp/10.98.0.2/9999 && echo done >&3' || true
    guest_status=0
    wait "$guest_pid" || guest_status=$?
    guest_pid=""
    cat "$e2e_dir/guest.out"
    [ "$status" -eq 0 ] || die "Chromium did not decode the aarch64 stream (see above)"
    [ "$guest_status" -eq 0 ] || die "lookout in the guest did not exit cleanly (status $guest_status)"
    echo "  end to end in $(( $(date +%s) - start )) s"
fi
step "all done"
