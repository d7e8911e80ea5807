#!/usr/bin/env bash
# Builds libcamera 0.7.x for CI from Debian's own source package and installs
# it into a private prefix, once.
#
# Why: the `libcamera` cargo feature of the appliance needs libcamera 0.4-0.7
# (crate libcamera 0.7), and Debian 12 ships 0.0.3. Debian's newer suites
# carry 0.7, so we take that source package (same tarball and patches the
# distribution builds) and build only what CI needs: the library with the
# `virtual` pipeline (the camera the capture test uses) and `uvcvideo`, no
# IPAs, apps, docs, tests or bindings.
#
# The newer suite is reached through a PRIVATE apt configuration under
# .ci-cache/apt (deb-src only, its own package lists): the machine's apt
# sources are not changed, so the system never sees the newer suite and its
# package lists do not grow. The mirror URI is copied at run time from the
# machine's own apt sources; no host name is written into any file of the
# repository.
#
# Usage:
#   scripts/libcamera.sh            build (or confirm) and write the env file
#   . .ci-cache/libcamera.env       then: PKG_CONFIG_PATH, LD_LIBRARY_PATH, ...
#
# Environment (optional):
#   LIBCAMERA_PREFIX   install prefix (default .ci-cache/libcamera-prefix)
#   LIBCAMERA_SUITES   Debian suites to look in (default "trixie forky sid")
#   LIBCAMERA_SERIES   version series accepted (default 0.7)
#   JOBS               parallel compile jobs (default: number of cores)
#   LIBCAMERA_ARCH     arm64: cross-build for aarch64 (scripts/aarch64.sh) with
#                      the aarch64-linux-gnu toolchain and arm64 build
#                      dependencies (multiarch); prefix .ci-cache/libcamera-arm64-prefix,
#                      env file .ci-cache/libcamera-arm64.env. Default: the machine's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CACHE="$ROOT/.ci-cache"
ARCH="${LIBCAMERA_ARCH:-}"
[ -z "$ARCH" ] || [ "$ARCH" = arm64 ] || { echo "libcamera.sh: LIBCAMERA_ARCH must be empty or arm64" >&2; exit 1; }
PREFIX="${LIBCAMERA_PREFIX:-$CACHE/libcamera${ARCH:+-$ARCH}-prefix}"
SRC_ROOT="$CACHE/libcamera-src"
APT_DIR="$CACHE/apt"
MESON_VENV="$CACHE/meson-venv"
ENV_FILE="$CACHE/libcamera${ARCH:+-$ARCH}.env"
STAMP="$PREFIX/.lookout-libcamera"
SUITES="${LIBCAMERA_SUITES:-trixie forky sid}"
SERIES="${LIBCAMERA_SERIES:-0.7}"
JOBS="${JOBS:-$(nproc)}"

step() { printf '\n==> libcamera: %s\n' "$*"; }
die() { printf 'libcamera.sh: error: %s\n' "$*" >&2; exit 1; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

write_env_file() {
    mkdir -p "$CACHE"
    cat >"$ENV_FILE" <<EOF
# Written by scripts/libcamera.sh: source this to build/run against the CI libcamera.
export LIBCAMERA_PREFIX="$PREFIX"
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$PREFIX/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
    # A cross build: pkg-config (the pkg-config crate) must accept it.
    [ -z "$ARCH" ] || echo 'export PKG_CONFIG_ALLOW_CROSS=1' >>"$ENV_FILE"
    step "environment (also in ${ENV_FILE#"$ROOT"/}; source it):"
    sed -n 's/^export /  export /p' "$ENV_FILE"
}

# --- build dependencies (Debian 12 packages only) ---------------------------
# Checked even when libcamera is already built: a restored cache still needs
# libclang (bindgen in libcamera-sys) and the libraries libcamera links.
# shellcheck source=lib/apt.sh
. "$ROOT/scripts/lib/apt.sh"
step "checking build dependencies"
apt_install dpkg-dev meson ninja-build python3-jinja2 python3-ply python3-yaml python3-venv \
    libyaml-dev libyuv-dev libgnutls28-dev pkg-config g++ libclang-dev
# Multiarch: the arm64 libraries libcamera links, next to the amd64 ones.
[ "$ARCH" != arm64 ] || apt_install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu \
    libyaml-dev:arm64 libyuv-dev:arm64 libssl-dev:arm64

# --- already installed? -----------------------------------------------------
# The stamp records the version and the prefix it was configured for (the
# prefix is compiled into libcamera as its data directory).
if [ -f "$STAMP" ] && [ -f "$PREFIX/lib/pkgconfig/libcamera.pc" ]; then
    installed=$(cat "$STAMP")
    case "$installed" in
        "$SERIES".*" $PREFIX")
            step "libcamera ${installed%% *} already installed in $PREFIX; nothing to build"
            write_env_file
            exit 0
            ;;
    esac
    step "stamp '$installed' does not match series $SERIES / prefix $PREFIX; rebuilding"
fi

# --- private apt configuration for the newer suite's source ------------------
# The URI of the machine's Debian archive entry (`deb ... bookworm main`),
# as "URI<TAB>signed-by" (signed-by may be empty): scripts/lib/apt-private.sh.
# shellcheck source=lib/apt-private.sh
. "$ROOT/scripts/lib/apt-private.sh"
find_debian_mirror() { apt_find_uri bookworm; }

APT_OPTS=(
    -o "Dir::Etc::SourceList=/dev/null"
    -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
    -o "Dir::State::Lists=$APT_DIR/lists"
    -o "Dir::Cache=$APT_DIR/cache"
    -o "APT::Default-Release=bookworm"
)

step "looking up the Debian mirror in the machine's apt sources"
mirror_line=$(find_debian_mirror) || die "cannot find the Debian archive in /etc/apt/sources.list{,.d}"
mirror_uri=${mirror_line%%$'\t'*}
signed_by=${mirror_line#*$'\t'}
[ -n "$signed_by" ] || signed_by=/usr/share/keyrings/debian-archive-keyring.gpg
echo "  mirror: $mirror_uri (keyring $signed_by)"

mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
cat >"$APT_DIR/sources.list.d/libcamera-src.sources" <<EOF
# Written by scripts/libcamera.sh (private apt configuration, source packages only).
Types: deb-src
URIs: $mirror_uri
Suites: $SUITES
Components: main
Signed-By: $signed_by
EOF
step "apt-get update (private lists: deb-src $SUITES)"
$SUDO apt-get "${APT_OPTS[@]}" update -qq

# Highest version of the accepted series among the suites.
version=$(apt-cache "${APT_OPTS[@]}" showsrc libcamera \
    | sed -n 's/^Version: //p' \
    | grep -E "^${SERIES//./\\.}\." \
    | sort -V | tail -n 1 || true)
[ -n "$version" ] || die "no libcamera $SERIES.x source package in suites: $SUITES"
upstream=${version%-*}
upstream=${upstream#*:}
echo "  libcamera source package $version (upstream $upstream)"

# --- source -----------------------------------------------------------------
src_dir="$SRC_ROOT/libcamera-$upstream"
if [ ! -f "$src_dir/meson.build" ]; then
    step "apt-get source libcamera=$version into ${SRC_ROOT#"$ROOT"/}"
    rm -rf "$SRC_ROOT"
    mkdir -p "$SRC_ROOT"
    # Unpacked by dpkg-source, which applies Debian's patches.
    (cd "$SRC_ROOT" && $SUDO apt-get "${APT_OPTS[@]}" source -qq "libcamera=$version")
    [ -f "$src_dir/meson.build" ] || die "apt-get source did not unpack into $src_dir"
else
    step "source already unpacked in ${src_dir#"$ROOT"/}"
fi

# --- meson ------------------------------------------------------------------
# libcamera states its minimum meson; use Debian's if new enough, else a venv.
need_meson=$(sed -n "s/.*meson_version *: *'>= *\([0-9.]*\)'.*/\1/p" "$src_dir/meson.build" | head -n 1)
[ -n "$need_meson" ] || die "cannot read the required meson version from $src_dir/meson.build"
MESON=meson
if ! dpkg --compare-versions "$(meson --version)" ge "$need_meson"; then
    step "Debian's meson $(meson --version) < $need_meson: installing meson from PyPI into ${MESON_VENV#"$ROOT"/}"
    [ -x "$MESON_VENV/bin/meson" ] || python3 -m venv "$MESON_VENV"
    if ! dpkg --compare-versions "$("$MESON_VENV/bin/meson" --version 2>/dev/null || echo 0)" ge "$need_meson"; then
        "$MESON_VENV/bin/pip" install -q "meson>=$need_meson"
    fi
    MESON="$MESON_VENV/bin/meson"
fi
echo "  meson $($MESON --version) (libcamera needs >= $need_meson)"

# --- configure, build, install ----------------------------------------------
build_dir="$src_dir/build-lookout${ARCH:+-$ARCH}"
cross=()
if [ "$ARCH" = arm64 ]; then
    mkdir -p "$CACHE"
    cat >"$CACHE/meson-cross-arm64.ini" <<'EOF'
# Written by scripts/libcamera.sh: Debian's aarch64-linux-gnu cross toolchain.
[binaries]
c = 'aarch64-linux-gnu-gcc'
cpp = 'aarch64-linux-gnu-g++'
ar = 'aarch64-linux-gnu-ar'
strip = 'aarch64-linux-gnu-strip'
pkg-config = 'pkg-config'
pkgconfig = 'pkg-config'

[properties]
pkg_config_libdir = ['/usr/lib/aarch64-linux-gnu/pkgconfig', '/usr/share/pkgconfig']

[host_machine]
system = 'linux'
cpu_family = 'aarch64'
cpu = 'cortex-a72'
endian = 'little'
EOF
    cross=(--cross-file "$CACHE/meson-cross-arm64.ini")
fi
# libcamera's build runs `python3` from PATH and imports jinja2, ply and yaml;
# those are Debian's python3-* packages, so Debian's python3 must win over any
# other interpreter on PATH (pyenv shims, venvs).
export PATH="/usr/bin:$PATH"
step "configuring (pipelines virtual,uvcvideo; no IPAs, apps, docs, tests, bindings)"
rm -rf "$build_dir"
# --wrap-mode=nodownload: never fetch subprojects; everything comes from Debian.
nice -n 10 "$MESON" setup "$build_dir" "$src_dir" \
    "${cross[@]}" --prefix="$PREFIX" --libdir=lib --buildtype=release --wrap-mode=nodownload \
    -Dpipelines=virtual,uvcvideo -Dipas= \
    -Dcam=disabled -Dqcam=disabled -Dlc-compliance=disabled \
    -Ddocumentation=disabled -Dtest=false -Dgstreamer=disabled -Dv4l2=disabled \
    -Dpycamera=disabled -Dtracing=disabled -Dandroid=disabled -Dudev=disabled \
    -Dlibdw=disabled -Dlibunwind=disabled -Dsoftisp-gpu=disabled \
    -Dapps-output-dng=disabled -Drpi-awb-nn=disabled

step "building with $JOBS jobs (nice 10)"
nice -n 10 ninja -C "$build_dir" -j "$JOBS"

step "installing into $PREFIX"
rm -rf "$PREFIX"
nice -n 10 "$MESON" install -C "$build_dir" --quiet
[ -f "$PREFIX/lib/pkgconfig/libcamera.pc" ] || die "install did not produce $PREFIX/lib/pkgconfig/libcamera.pc"
printf '%s %s\n' "$upstream" "$PREFIX" >"$STAMP"
echo "  installed: $(PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" pkg-config --modversion libcamera)"

write_env_file
