# Sourced by scripts/aarch64.sh: an emulated aarch64 machine to run the
# cross-built binaries in, as a Raspberry Pi would (full-system emulation:
# qemu-system-aarch64 -M virt -cpu cortex-a72, the CPU of a Raspberry Pi 4).
#
# Why not user-mode emulation (qemu-aarch64-static): on these machines any
# aarch64 program that starts a thread spins for ever in glibc's
# pthread_create under it (see docs/aarch64.md); tokio and the test harness
# start threads. Full-system emulation runs a real arm64 kernel and has no
# such problem.
#
# The guest: Debian 12's cloud arm64 kernel, an initramfs with busybox
# (static), the C/C++ runtime libraries the binaries need (resolved from
# their ELF NEEDED entries), the virtio modules and scripts/aarch64/init;
# and a work disk (ext4 image, /work in the guest) holding the binaries and
# /work/job.sh, which the init runs.
#
#   guest_prepare ELF...            kernel + initramfs (libraries for ELF...)
#   guest_run DIR TIMEOUT [NETNS TAP GUEST_IP/PREFIX HOST_IP]
#                                   boots with DIR as the work disk; returns
#                                   job.sh's exit status (124 on timeout);
#                                   the serial console is in DIR.console.log

GUEST_CACHE="${GUEST_CACHE:-$ROOT/.ci-cache/aarch64-guest}"
GUEST_CPUS="${GUEST_CPUS:-2}"
GUEST_MEM="${GUEST_MEM:-2048}"
# Extra library folders (aarch64) searched before the cross toolchain's.
GUEST_LIB_DIRS="${GUEST_LIB_DIRS:-}"

# guest_libs ELF...: prints the paths of every shared library the ELF files
# need, transitively, from the aarch64 library folders.
guest_libs() {
    local dirs="$GUEST_LIB_DIRS /usr/aarch64-linux-gnu/lib /usr/lib/aarch64-linux-gnu /lib/aarch64-linux-gnu"
    local queue=("$@") seen=" " file lib dir found
    while [ ${#queue[@]} -gt 0 ]; do
        file=${queue[0]}
        queue=("${queue[@]:1}")
        for lib in $(aarch64-linux-gnu-readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p') \
            $(aarch64-linux-gnu-readelf -l "$file" | sed -n 's/.*interpreter: .*\/\(.*\)\]/\1/p'); do
            case "$seen" in *" $lib "*) continue ;; esac
            seen="$seen$lib "
            found=""
            for dir in $dirs; do
                [ -e "$dir/$lib" ] && { found=$(realpath "$dir/$lib"); break; }
            done
            [ -n "$found" ] || { echo "guest: cannot find $lib (needed by $file) in: $dirs" >&2; return 1; }
            printf '%s\t%s\n' "$lib" "$found"
            queue+=("$found")
        done
    done
}

# guest_prepare ELF...: the kernel (Debian 12's newest 6.1 cloud arm64 kernel)
# and an initramfs holding the libraries ELF... need.
guest_prepare() {
    local debs="$GUEST_CACHE/debs" kdir="$GUEST_CACHE/kernel" root="$GUEST_CACHE/initramfs-root" kpkg
    if ! ls "$debs"/linux-image-*-cloud-arm64-unsigned_*_arm64.deb >/dev/null 2>&1 \
        || ! ls "$debs"/busybox-static_*_arm64.deb >/dev/null 2>&1; then
        kpkg=$(apt-cache "${APT_PRIVATE_OPTS[@]}" pkgnames linux-image-6.1.0- \
            | grep -E '^linux-image-6\.1\.0-[0-9]+-cloud-arm64-unsigned$' | sort -V | tail -n 1)
        [ -n "$kpkg" ] || { echo "guest: no linux-image-6.1.0-*-cloud-arm64-unsigned in bookworm" >&2; return 1; }
        rm -rf "$debs"
        apt_private_download "$debs" "$kpkg:arm64" busybox-static:arm64
    fi
    if ! ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1; then
        rm -rf "$kdir"
        dpkg-deb -x "$(ls "$debs"/linux-image-*_arm64.deb)" "$kdir"
    fi
    GUEST_KERNEL=$(ls "$kdir"/boot/vmlinuz-*)

    rm -rf "$root"
    mkdir -p "$root/bin" "$root/lib" "$root/modules"
    dpkg-deb --fsys-tarfile "$(ls "$debs"/busybox-static_*_arm64.deb)" | tar -xO ./bin/busybox >"$root/bin/busybox"
    chmod 755 "$root/bin/busybox"
    install -m 755 "$ROOT/scripts/aarch64/init" "$root/init"
    local modules="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net virtio_blk virtio-rng" m f
    for m in $modules; do
        f=$(find "$kdir/lib/modules" -name "$m.ko" | head -n 1)
        [ -n "$f" ] || { echo "guest: kernel module $m.ko not in $kdir" >&2; return 1; }
        cp "$f" "$root/modules/"
    done
    echo "$modules" >"$root/modules/list"
    local name path
    guest_libs "$@" >"$GUEST_CACHE/libs.txt" || return 1
    while IFS=$'\t' read -r name path; do
        cp "$path" "$root/lib/$name"
    done <"$GUEST_CACHE/libs.txt"
    echo "guest: libraries: $(cut -f1 "$GUEST_CACHE/libs.txt" | tr '\n' ' ')"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$GUEST_CACHE/initramfs.gz"
    GUEST_INITRAMFS="$GUEST_CACHE/initramfs.gz"
}

# guest_run DIR TIMEOUT [NETNS TAP GUEST_IP/PREFIX HOST_IP]
guest_run() {
    local dir=$1 timeout=$2 netns=${3:-} tap=${4:-} guest_ip=${5:-} host_ip=${6:-}
    local image="$dir.img" log="$dir.console.log" size_mb append net=() wrap=()
    [ -f "$dir/job.sh" ] || { echo "guest: $dir/job.sh missing" >&2; return 1; }
    # Room for what the job writes (state, logs) besides the files.
    size_mb=$(( $(du -sm "$dir" | cut -f1) + 256 ))
    rm -f "$image"
    mkfs.ext4 -q -F -L work -d "$dir" "$image" "${size_mb}M"
    append="console=ttyAMA0 panic=-1 quiet"
    if [ -n "$netns" ]; then
        append="$append lookout.ip=$guest_ip lookout.gw=$host_ip"
        net=(-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" -device virtio-net-pci,netdev=n0,romfile=)
        wrap=(ip netns exec "$netns")
    else
        net=(-nic none)
    fi
    echo "guest: booting (qemu-system-aarch64 -M virt -cpu cortex-a72 -smp $GUEST_CPUS -m $GUEST_MEM; timeout ${timeout}s; console: $log)"
    local status=0 errexit=0
    [[ $- == *e* ]] && errexit=1
    set +e
    "${wrap[@]}" timeout -k 10 "$timeout" qemu-system-aarch64 \
        -M virt -cpu cortex-a72 -accel tcg,thread=multi -smp "$GUEST_CPUS" -m "$GUEST_MEM" \
        -nographic -no-reboot -serial mon:stdio \
        -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRAMFS" -append "$append" \
        -drive "file=$image,format=raw,if=virtio" -device virtio-rng-pci "${net[@]}" \
        </dev/null 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    [ "$errexit" -eq 0 ] || set -e
    [ "$status" -eq 124 ] && { echo "guest: TIMEOUT after ${timeout}s" >&2; return 124; }
    local exit_line
    exit_line=$(tr -d '\r' <"$log" | sed -n 's/^LOOKOUT-GUEST-EXIT=\([0-9]*\)$/\1/p' | tail -n 1)
    [ -n "$exit_line" ] || { echo "guest: the guest ended without reporting job.sh's status (qemu status $status)" >&2; return 1; }
    return "$exit_line"
}
