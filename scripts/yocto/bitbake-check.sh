#!/usr/bin/env bash
# Real bitbake against the pinned layers, offline: the Yocto layer must parse
# and the image's task graph must resolve for every machine.
#
#   bash scripts/yocto/bitbake-check.sh LAYER_ARCHIVE_DIR
#
# LAYER_ARCHIVE_DIR holds `git archive` snapshots of the layers (NAME-<commit>.tar.xz,
# the layer's name as the top folder) and their SHA256SUMS; CI passes
# ../shared/yocto-layers. When the folder does not exist the script says so
# loudly and skips the bitbake part (exit 0).
#
#  1. pins: the archives match SHA256SUMS, and the commit each archive holds is
#     the one yocto-layer/kas/include/common.yml pins (any mismatch fails,
#     naming the layer); a self-test breaks a copy of a pin and of a sum and
#     requires the check to fail
#  2. the archives are unpacked into .ci-cache/bitbake/layers (once per set of
#     sums), this repository is copied beside them, and conf/bblayers.conf and
#     conf/local.conf are generated from the kas machine files (kas's own
#     loader), plus BB_NO_NETWORK = "1"
#  3. bitbake runs as an unprivileged user (root: a user namespace from
#     `unshare --map-user`) with the en_US.UTF-8 locale:
#       - raspberrypi4-64: `bitbake -p`, zero errors and zero warnings
#       - every machine: `bitbake -g lookout-image` (no missing providers, and
#         no warnings in that machine's parse), `bitbake -e lookout-image` and
#         `bitbake -e lookout`, checked by scripts/yocto/bitbake-check.py
#  4. mutation: with the distro override name clash put back (a postread file
#     setting DISTROOVERRIDES = "lookout"), bitbake itself must refuse the
#     lookout recipe with its pn-overrides QA error
#
# One TMPDIR and parse cache serve all machines and stay in .ci-cache/bitbake
# between runs (unchanged recipes are not parsed again); a new set of layer
# archives starts from an empty build directory.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
YOCTO_SCRIPTS="$REPO_ROOT/scripts/yocto"
WORK="$REPO_ROOT/.ci-cache/bitbake"
VENV="$REPO_ROOT/.ci-cache/yocto-venv"
MACHINES=(raspberrypi4-64 raspberrypi5 raspberrypi0-2w-64)
BB_UID=1000   # the unprivileged user bitbake runs as when started as root

step() { printf '\n==> bitbake-check: %s\n' "$*"; }
fail() { printf '\nbitbake-check: FAIL: %s\n' "$*" >&2; exit 1; }

[ "$#" -eq 1 ] || fail "usage: bash scripts/yocto/bitbake-check.sh LAYER_ARCHIVE_DIR"
if [ ! -d "$1" ]; then
    cat >&2 <<EOF

################################################################################
bitbake-check: SKIPPED: no layer archive folder at $1
  The real bitbake parse of yocto-layer/ did NOT run: it needs the layer
  snapshots (bitbake, openembedded-core, meta-openembedded, meta-raspberrypi,
  meta-yocto) as NAME-<commit>.tar.xz with SHA256SUMS in that folder, because
  bitbake cannot fetch layers here. Only the checks of scripts/yocto-checks.sh
  cover the layer in this run.
################################################################################
EOF
    exit 0
fi
ARCHIVES="$(cd "$1" && pwd)"
START=$SECONDS

# ---------------------------------------------------------------- setup
# shellcheck source=../lib/apt.sh
. "$REPO_ROOT/scripts/lib/apt.sh"
step "setup: bitbake's host tools, the en_US.UTF-8 locale, kas"
# The tools oe-core's sanity check requires (HOSTTOOLS) that Debian 12 may lack.
apt_install build-essential chrpath cpio diffstat file gawk git locales lz4 python3 \
    rpcsvc-proto texinfo unzip util-linux wget xz-utils zstd
if ! locale -a 2>/dev/null | grep -qiE '^en_US\.utf-?8$'; then
    ${_APT_SUDO} localedef -i en_US -f UTF-8 en_US.UTF-8
fi
# shellcheck source=../lib/yocto-venv.sh
. "$REPO_ROOT/scripts/lib/yocto-venv.sh"
yocto_venv "$VENV" "$YOCTO_SCRIPTS/requirements.txt"
PY="$VENV/bin/python"

# ---------------------------------------------------------------- pins
step "1/4 layer archives in $ARCHIVES: SHA256SUMS and the kas pins"
"$PY" "$YOCTO_SCRIPTS/bitbake-check.py" pins "$ARCHIVES" || fail "the layer archives do not match the pins"
"$PY" "$YOCTO_SCRIPTS/bitbake-check.py" pins-selftest "$ARCHIVES" || fail "the pin check's self-test failed"

# ---------------------------------------------------------------- unpack
step "2/4 unpack the layers, copy this repository, generate the build configuration"
mkdir -p "$WORK"
STAMP="$(sha256sum "$ARCHIVES/SHA256SUMS" | cut -d' ' -f1)"
if [ "$(cat "$WORK/layers.sha256" 2>/dev/null)" != "$STAMP" ]; then
    echo "bitbake-check: new layer archives: unpacking, starting from an empty build directory"
    rm -rf "$WORK/layers" "$WORK/build" "$WORK/layers.sha256"
    mkdir -p "$WORK/layers.new"
    for archive in "$ARCHIVES"/*.tar.xz; do
        tar -xJf "$archive" -C "$WORK/layers.new"
    done
    mv "$WORK/layers.new" "$WORK/layers"
    echo "$STAMP" > "$WORK/layers.sha256"
else
    echo "bitbake-check: layers already unpacked for these archives (.ci-cache/bitbake/layers)"
fi
# A copy of this repository (tracked and new files, mtimes kept so the parse
# cache stays valid for unchanged recipes): the lookout recipes build the
# checkout that contains the layer (externalsrc), and externalsrc must not
# write into this repository's .git.
rm -rf "$WORK/src"
mkdir -p "$WORK/src/lookout"
if git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --no-recursion --ignore-failed-read -cf - -T - 2>/dev/null) \
        | tar -xf - -C "$WORK/src/lookout"
else
    tar -C "$REPO_ROOT" --exclude=./target --exclude=./.ci-cache --exclude='*/node_modules' -cf - . \
        | tar -xf - -C "$WORK/src/lookout"
fi
mkdir -p "$WORK/build" "$WORK/home"
# A cache carried over from a checkout elsewhere (a moved or copied
# .ci-cache) remembers its old TMPDIR, and OE's sanity check then refuses to
# parse: the parse cache is only a cache, so start it afresh.
saved_tmpdir="$WORK/build/tmp/saved_tmpdir"
if [ -f "$saved_tmpdir" ] && [ "$(cat "$saved_tmpdir")" != "$WORK/build/tmp" ]; then
    echo "bitbake-check: the parse cache was made in $(cat "$saved_tmpdir"); starting it afresh here"
    rm -rf "$WORK/build/tmp"
fi
"$PY" "$YOCTO_SCRIPTS/bitbake-check.py" conf "$REPO_ROOT/yocto-layer/kas/${MACHINES[0]}.yml" \
    "$WORK/layers" "$WORK/src/lookout" "$WORK/build" || fail "could not generate the build configuration"

# bitbake as an unprivileged user: root maps itself to uid $BB_UID in a new
# user namespace (files it owns stay writable); other users run it directly.
# A fixed PYTHONHASHSEED: values computed from Python sets (COMBINED_FEATURES)
# are then in the same order every run, so the configuration hash, and with
# it the parse cache of the previous run, stays valid; so does the git ceiling:
# the layers are not git checkouts, and oe-core's configuration asks git for
# their revision, which would otherwise be this repository's HEAD (.ci-cache
# is inside it) and change the configuration with every commit. Every command starts
# its own server (no BB_SERVER_TIMEOUT): a server that has parsed recipes
# hashes the configuration differently (bitbake's hash includes the library
# code it has seen), which would make the next command parse everything again.
run_bitbake() {
    local machine=$1
    shift
    local wrap=() rc
    [ "$(id -u)" -ne 0 ] || wrap=(unshare --user --map-user="$BB_UID" --map-group="$BB_UID" --)
    (cd "$WORK/build" && "${wrap[@]}" env -i \
        PATH="$WORK/layers/bitbake/bin:$WORK/layers/openembedded-core/scripts:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        HOME="$WORK/home" USER=builder LOGNAME=builder SHELL=/bin/sh TERM=dumb \
        LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8 BUILDDIR="$WORK/build" \
        MACHINE="$machine" PYTHONHASHSEED=0 GIT_CEILING_DIRECTORIES="$WORK" \
        BB_ENV_PASSTHROUGH_ADDITIONS="MACHINE PYTHONHASHSEED GIT_CEILING_DIRECTORIES" \
        bitbake "$@") && rc=0 || rc=$?
    # The parse cache this command used (one per configuration): kept, the rest removed at the end.
    readlink "$WORK/build/tmp/cache/bb_cache.dat" >> "$WORK/cache-in-use" 2>/dev/null || true
    return "$rc"
}
# check_log LOG WHAT: bitbake printed no ERROR: and no WARNING: lines (without
# a terminal the first may follow "Parsing recipes..." on the same line) and
# no summary counting any.
check_log() {
    local problems
    problems="$(grep -E '(^|\.\.\.)(ERROR|WARNING):|^Summary: There (was|were) [0-9]+ (ERROR|WARNING)' "$1" || true)"
    if [ -n "$problems" ]; then
        printf '%s\n' "$problems" | head -n 40
        fail "$2: bitbake reported $(printf '%s\n' "$problems" | wc -l) error/warning line(s) (log: $1)"
    fi
}
LOGS="$WORK/logs"
rm -rf "$LOGS" "$WORK/cache-in-use"
mkdir -p "$LOGS"
[ "$(id -u)" -ne 0 ] || echo "bitbake-check: running bitbake as uid $BB_UID in a user namespace (bitbake refuses root)"

# ---------------------------------------------------------------- bitbake
step "3/4 bitbake $(bitbake_version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$WORK/layers/bitbake/lib/bb/__init__.py"); echo "$bitbake_version") offline"
for machine in "${MACHINES[@]}"; do
    t0=$SECONDS
    if [ "$machine" = "${MACHINES[0]}" ]; then
        echo "bitbake-check: [$machine] bitbake -p (parse every recipe)"
        run_bitbake "$machine" -p > "$LOGS/$machine-parse.log" 2>&1 \
            || { tail -n 40 "$LOGS/$machine-parse.log"; fail "[$machine] bitbake -p failed"; }
        check_log "$LOGS/$machine-parse.log" "[$machine] bitbake -p"
        grep -E '^(Parsing of|NOTE: Parsing of|Summary)' "$LOGS/$machine-parse.log" || true
        echo "bitbake-check: [$machine] parsed with no errors and no warnings ($((SECONDS - t0)) s)"
    fi
    echo "bitbake-check: [$machine] bitbake -g lookout-image"
    mkdir -p "$LOGS/$machine"
    rm -f "$WORK/build/task-depends.dot" "$WORK/build/pn-buildlist"
    run_bitbake "$machine" -g lookout-image > "$LOGS/$machine-graph.log" 2>&1 || true
    # bitbake writes the graph into its working directory, the build directory.
    mv "$WORK/build/task-depends.dot" "$WORK/build/pn-buildlist" "$LOGS/$machine/" 2>/dev/null || true
    if ! [ -s "$LOGS/$machine/task-depends.dot" ] || grep -qE '(^|\.\.\.)ERROR:' "$LOGS/$machine-graph.log"; then
        grep -E '^(ERROR|WARNING|NOTE: Runtime target|Missing or unbuildable)' "$LOGS/$machine-graph.log" | head -n 40 || true
        tail -n 20 "$LOGS/$machine-graph.log"
        fail "[$machine] bitbake -g lookout-image failed (missing providers?)"
    fi
    check_log "$LOGS/$machine-graph.log" "[$machine] bitbake -g lookout-image"
    echo "bitbake-check: [$machine] bitbake -e lookout-image, bitbake -e lookout"
    run_bitbake "$machine" -e lookout-image > "$LOGS/$machine-image.env" 2>&1 \
        || { tail -n 20 "$LOGS/$machine-image.env"; fail "[$machine] bitbake -e lookout-image failed"; }
    run_bitbake "$machine" -e lookout > "$LOGS/$machine-lookout.env" 2>&1 \
        || { tail -n 20 "$LOGS/$machine-lookout.env"; fail "[$machine] bitbake -e lookout failed"; }
    "$PY" "$YOCTO_SCRIPTS/bitbake-check.py" graph "$machine" "$LOGS/$machine/task-depends.dot" \
        || fail "[$machine] the task graph of lookout-image is wrong"
    "$PY" "$YOCTO_SCRIPTS/bitbake-check.py" image-env "$machine" "$LOGS/$machine-image.env" \
        || fail "[$machine] lookout-image is configured wrongly"
    "$PY" "$YOCTO_SCRIPTS/bitbake-check.py" recipe-env "$LOGS/$machine-lookout.env" "$WORK/src/lookout/Cargo.lock" \
        || fail "[$machine] the lookout recipe is configured wrongly"
    echo "bitbake-check: [$machine] done ($((SECONDS - t0)) s)"
done

# ---------------------------------------------------------------- mutation
step "4/4 mutation: the distro override name clash put back must fail in bitbake"
# -b parses only the lookout recipe (a few seconds), with DISTROOVERRIDES set
# back to the distro's name, as it was before the fix.
printf 'DISTROOVERRIDES = "lookout"\n' > "$WORK/build/conf/mutation-clash.conf"
# bitbake must fail, and with its own pn-overrides QA error.
if run_bitbake "${MACHINES[0]}" -R conf/mutation-clash.conf -b \
        "$WORK/src/lookout/yocto-layer/recipes-lookout/lookout/lookout_git.bb" -e \
        > "$LOGS/mutation-clash.log" 2>&1; then
    fail "with DISTROOVERRIDES = \"lookout\" bitbake accepted the lookout recipe (log: $LOGS/mutation-clash.log)"
fi
grep -E 'ERROR: .*has PN of "lookout" which is in OVERRIDES.*\[pn-overrides\]' "$LOGS/mutation-clash.log" \
    || { tail -n 20 "$LOGS/mutation-clash.log"
         fail "with DISTROOVERRIDES = \"lookout\" bitbake did not report its pn-overrides QA error (log: $LOGS/mutation-clash.log)"; }
rm -f "$WORK/build/conf/mutation-clash.conf"
echo "bitbake-check: the clash is refused by bitbake itself (pn-overrides), as it must be"

# Parse caches of configurations this run did not use (about 125 MB each).
for cache in "$WORK"/build/tmp/cache/bb_cache.dat.*; do
    [ -e "$cache" ] || continue
    grep -qxF "$(basename "$cache")" "$WORK/cache-in-use" || rm -f "$cache"
done

printf '\nbitbake-check: PASS: pins, bitbake -p clean, lookout-image resolves for %s (%d s)\n' \
    "${MACHINES[*]}" "$((SECONDS - START))"
