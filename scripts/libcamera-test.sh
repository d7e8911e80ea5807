#!/usr/bin/env bash
# Lints and tests the libcamera camera source (cargo feature `libcamera`)
# against libcamera's `virtual` camera. Fails on any problem; never skips.
#
#   1. builds libcamera 0.7 once (scripts/libcamera.sh) and uses it
#   2. declares the virtual camera (virtual.yaml in the libcamera prefix)
#   3. cargo clippy with the feature, warnings are errors
#   4. the source's unit tests
#   5. appliance/tests/libcamera_capture.rs: frames from the virtual camera
#      through LibcameraSource, then H.264 encode/decode
#
# libcamera's camera manager refuses to start when /sys/bus/media/devices is
# missing (a kernel without the media subsystem, as in CI containers). Then
# the capture test runs in a private mount namespace with an empty tmpfs
# over /sys/bus that holds an empty media/devices directory: the virtual
# camera needs no device, and the host's /sys is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'libcamera-test.sh: FAILED: %s\n' "$*" >&2; exit 1; }

scripts/libcamera.sh
# shellcheck source=/dev/null
. "$ROOT/.ci-cache/libcamera.env"
[ -n "${LIBCAMERA_PREFIX:-}" ] || die ".ci-cache/libcamera.env did not set LIBCAMERA_PREFIX"
pkg-config --exists libcamera || die "pkg-config cannot find libcamera (PKG_CONFIG_PATH=$PKG_CONFIG_PATH)"
echo "libcamera $(pkg-config --modversion libcamera) from $LIBCAMERA_PREFIX"

step "virtual camera: $LIBCAMERA_PREFIX/share/libcamera/pipeline/virtual/virtual.yaml"
virtual_dir="$LIBCAMERA_PREFIX/share/libcamera/pipeline/virtual"
mkdir -p "$virtual_dir"
# libcamera reads this from its compiled-in data directory (the prefix).
# Colour bars, because the test checks where the colours land; the sizes are
# the ones the test asks for (the camera grants only listed sizes).
cp scripts/libcamera-virtual.yaml "$virtual_dir/virtual.yaml"
cat "$virtual_dir/virtual.yaml"

# libcamera logs every camera start at INFO; warnings and errors are enough.
export LIBCAMERA_LOG_LEVELS="${LIBCAMERA_LOG_LEVELS:-*:WARN}"

step "cargo clippy -p lookout --features libcamera (all targets, warnings are errors)"
nice -n 10 cargo clippy -p lookout --features libcamera --all-targets --locked -- -D warnings

step "unit tests of the libcamera source"
nice -n 10 cargo test -p lookout --features libcamera --locked --lib media::libcamera

step "building the capture test"
# The JSON messages name the test executable; pick the libcamera_capture one.
test_bin=$(nice -n 10 cargo test -p lookout --features libcamera --locked --test libcamera_capture \
        --no-run --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "libcamera_capture" \
            and msg.get("executable"):
        print(msg["executable"])
')
[ -n "$test_bin" ] && [ -x "$test_bin" ] || die "cargo did not produce the libcamera_capture test binary"
echo "test binary: $test_bin"

step "running the capture test against the virtual camera"
if [ -d /sys/bus/media/devices ]; then
    echo "/sys/bus/media/devices exists: running directly"
    "$test_bin" --test-threads=1 || die "libcamera_capture tests failed"
else
    command -v unshare >/dev/null || die "unshare (util-linux) is needed to give libcamera a media bus"
    echo "no /sys/bus/media/devices: running in a private mount namespace with an empty media bus"
    # unshare -m makes mounts private to the namespace (propagation private).
    unshare -m -- sh -c '
        set -e
        mount -t tmpfs -o size=1m,mode=0755 lookout-media-bus /sys/bus
        mkdir -p /sys/bus/media/devices
        exec "$@"
    ' sh "$test_bin" --test-threads=1 || die "libcamera_capture tests failed (or the namespace could not be set up)"
fi

step "libcamera source: all checks passed"
