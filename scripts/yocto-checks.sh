#!/usr/bin/env bash
# Checks of the Yocto layer and the systemd integration that can run without
# bitbake (which cannot fetch its layers here):
#
#   1. oelint-adv (--release wrynose) over every recipe, bbappend, class and
#      include in yocto-layer/; suppressions only from
#      scripts/yocto/oelint-suppressions.ini
#   2. yocto-layer/recipes-lookout/lookout/lookout-crates.inc matches Cargo.lock
#   3. the kas files: kas's schema and loader, quoted 40-hex commits
#   4. systemd-analyze verify of every unit in the layer (lookout.service with
#      ExecStart pointed at the given binary), and an offline exposure check
#   5. the given lookout binary sends READY=1 and WATCHDOG=1 to NOTIFY_SOCKET
#   6. first boot of a provisioned card: the paths and command lines of the
#      wks and the units, played in namespaces (scripts/yocto/first-boot-test.py;
#      needs root)
#
# Usage: bash scripts/yocto-checks.sh PATH/TO/lookout
# (lookout-provision must be beside it: cargo build -p lookout -p lookout-provisioning)
#
# Installs what it needs, idempotently: Debian packages with apt-get (apt-get
# update only when something is missing) and the Python tools pinned in
# scripts/yocto/requirements.txt into .ci-cache/yocto-venv. Every step prints
# what it does; any failure stops the script with a non-zero status.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
YOCTO_SCRIPTS="$REPO_ROOT/scripts/yocto"
VENV="$REPO_ROOT/.ci-cache/yocto-venv"
REQUIREMENTS="$YOCTO_SCRIPTS/requirements.txt"
SECURITY_THRESHOLD=30   # systemd-analyze security exposure, x10 (30 = "3.0 OK")

step() { printf '\n==> yocto-checks: %s\n' "$*"; }
fail() { printf '\nyocto-checks: FAIL: %s\n' "$*" >&2; exit 1; }

if [ "$#" -ne 1 ]; then
    fail "usage: bash scripts/yocto-checks.sh PATH/TO/lookout (the built appliance binary)"
fi
LOOKOUT_BIN="$(cd "$(dirname "$1")" 2>/dev/null && pwd)/$(basename "$1")" \
    || fail "no such directory for the lookout binary: $1"
[ -f "$LOOKOUT_BIN" ] && [ -x "$LOOKOUT_BIN" ] || fail "not an executable file: $1"
PROVISION_BIN="$(dirname "$LOOKOUT_BIN")/lookout-provision"
[ -x "$PROVISION_BIN" ] \
    || fail "no $PROVISION_BIN beside lookout; build both: cargo build -p lookout -p lookout-provisioning"

# ---------------------------------------------------------------- setup
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
# shellcheck source=lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"

step "setup: host tools"
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
command -v git >/dev/null 2>&1 || apt_install git
# For the first-boot test: images, namespaces, the service user, Wi-Fi.
apt_install mtools dosfstools fdisk e2fsprogs util-linux iproute2 wpasupplicant
command -v systemd-analyze >/dev/null 2>&1 || fail "systemd-analyze is still missing after installing systemd"
python3 - <<'EOF' || fail "python3 >= 3.11 is required (tomllib)"
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
EOF
echo "yocto-checks: $(systemd-analyze --version | head -n1), $(python3 --version), git $(git --version | cut -d' ' -f3)"

step "setup: Python tools in ${VENV#"$REPO_ROOT"/} ($(grep -v '^#' "$REQUIREMENTS" | xargs))"
# shellcheck source=lib/yocto-venv.sh
. "$(dirname "$0")/lib/yocto-venv.sh"
yocto_venv "$VENV" "$REQUIREMENTS"
"$VENV/bin/oelint-adv" --version
"$VENV/bin/kas" --version

# ---------------------------------------------------------------- checks
step "1/6 oelint-adv --release wrynose over yocto-layer/ (suppressions: scripts/yocto/oelint-suppressions.ini)"
"$VENV/bin/python" "$YOCTO_SCRIPTS/run-oelint.py" --oelint "$VENV/bin/oelint-adv" \
    || fail "oelint-adv found errors or warnings in yocto-layer/"

step "2/6 lookout-crates.inc matches Cargo.lock (names, versions, sha256)"
python3 "$YOCTO_SCRIPTS/gen-crates-inc.py" --check \
    || fail "lookout-crates.inc is stale; run: python3 scripts/yocto/gen-crates-inc.py --write"

step "3/6 kas files: schema, kas loader, pinned branches and quoted 40-hex commits"
"$VENV/bin/python" "$YOCTO_SCRIPTS/check-kas.py" || fail "kas configuration check failed"

step "4/6 systemd-analyze verify of the layer's units (lookout.service runs $LOOKOUT_BIN)"
UNIT_DIR="$(mktemp -d)"
cleanup() { rm -rf "$UNIT_DIR"; }
trap cleanup EXIT
# Every unit the layer installs, with the programs they start pointed at files
# that exist here: verify checks that ExecStart= is executable.
TRUE_BIN="$(command -v true)"
HOSTNAME_SCRIPT="$REPO_ROOT/yocto-layer/recipes-lookout/lookout-network/files/lookout-hostname"
mapfile -t UNITS < <(find "$REPO_ROOT/yocto-layer" -path '*/files/*' \
    \( -name '*.service' -o -name '*.path' -o -name '*.socket' -o -name '*.timer' -o -name '*.mount' \) | sort)
[ "${#UNITS[@]}" -gt 0 ] || fail "no systemd units found under yocto-layer/"
for unit in "${UNITS[@]}"; do
    sed -e "s#^ExecStart=/usr/bin/lookout #ExecStart=$LOOKOUT_BIN #" \
        -e "s#^ExecStart=/usr/sbin/wpa_supplicant #ExecStart=$TRUE_BIN #" \
        -e "s#^ExecStart=/usr/libexec/lookout-hostname\$#ExecStart=$HOSTNAME_SCRIPT#" \
        "$unit" > "$UNIT_DIR/$(basename "$unit")"
done
grep -q "^ExecStart=$LOOKOUT_BIN " "$UNIT_DIR/lookout.service" \
    || fail "could not point ExecStart of lookout.service at $LOOKOUT_BIN"
for unit in "${UNITS[@]}"; do
    name="$(basename "$unit")"
    echo "yocto-checks: systemd-analyze verify $name"
    # verify exits 0 on some problems (unknown keys are only logged), so any
    # message about the unit counts as a failure too.
    if ! out="$(cd "$UNIT_DIR" && systemd-analyze verify --man=no "$UNIT_DIR/$name" 2>&1)"; then
        printf '%s\n' "$out"
        fail "systemd-analyze verify rejected $name"
    fi
    if printf '%s\n' "$out" | grep -F "$name" >/dev/null; then
        printf '%s\n' "$out"
        fail "systemd-analyze verify reported problems in $name"
    fi
    [ -z "$out" ] || printf '%s\n' "$out"
done
echo "yocto-checks: systemd-analyze security --offline=yes lookout.service (must be <= $((SECURITY_THRESHOLD / 10)).$((SECURITY_THRESHOLD % 10)))"
if ! out="$(cd "$UNIT_DIR" && systemd-analyze security --offline=yes --no-pager \
        --threshold="$SECURITY_THRESHOLD" "$UNIT_DIR/lookout.service" 2>&1)"; then
    printf '%s\n' "$out"
    fail "lookout.service exposure is above the threshold (or the analysis failed)"
fi
printf '%s\n' "$out" | grep -i 'overall exposure' || fail "systemd-analyze security printed no exposure level"

step "5/6 sd_notify: $LOOKOUT_BIN sends READY=1 and WATCHDOG=1 (scripts/yocto/notify-test.py)"
python3 "$YOCTO_SCRIPTS/notify-test.py" "$LOOKOUT_BIN" || fail "the notify/watchdog test failed"

step "6/6 first boot of a provisioned card (scripts/yocto/first-boot-test.py)"
# Root for the namespaces, bind mounts and the switch to the service user.
$SUDO python3 "$YOCTO_SCRIPTS/first-boot-test.py" "$LOOKOUT_BIN" "$PROVISION_BIN" \
    || fail "the first-boot test failed"

printf '\nyocto-checks: 6 passed, 0 failed\n'
