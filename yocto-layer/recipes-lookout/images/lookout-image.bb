SUMMARY = "Lookout camera appliance SD card image"
DESCRIPTION = "A small systemd-based image for Raspberry Pi 4, Pi 5 and Zero 2 W \
               that boots straight into the Lookout appliance: read-only root \
               filesystem, state on its own data partition, device identity on \
               the boot partition, Ethernet and Wi-Fi, time sync, libcamera, \
               and no SSH unless enabled."
SECTION = "images"
LICENSE = "MIT"

inherit core-image

# Set LOOKOUT_ENABLE_SSH = "1" (local.conf, or kas/debug-ssh.yml) for a
# debugging image with the dropbear SSH server; root logs in with the keys
# in LOOKOUT_SSH_AUTHORIZED_KEYS (there is no root password).
LOOKOUT_ENABLE_SSH ??= "0"
LOOKOUT_SSH_AUTHORIZED_KEYS ??= ""

IMAGE_FEATURES += "read-only-rootfs"
IMAGE_FEATURES += "${@'ssh-server-dropbear' if d.getVar('LOOKOUT_ENABLE_SSH') == '1' else ''}"

# The machine's extra packages bring the kernel modules (meta-raspberrypi's
# rpi-base.inc), the Wi-Fi firmware and the udev rules; its Bluetooth
# firmware is left out while the distro opts out of Bluetooth.
IMAGE_INSTALL = "\
    packagegroup-core-boot \
    ${@lookout_machine_extras(d)} \
    e2fsprogs-e2fsck \
    lookout \
    lookout-network \
    volatile-binds \
"

IMAGE_LINGUAS = ""

def lookout_machine_extras(d):
    """MACHINE_EXTRA_RRECOMMENDS without bluez-firmware-* unless DISTRO_FEATURES has bluetooth."""
    extras = (d.getVar('MACHINE_EXTRA_RRECOMMENDS') or '').split()
    if not bb.utils.contains('DISTRO_FEATURES', 'bluetooth', True, False, d):
        extras = [p for p in extras if not p.startswith('bluez-firmware-')]
    return ' '.join(extras)

# A compressed disk image plus its block map: `bmaptool copy` writes only the
# used blocks; Raspberry Pi Imager and dd take the .wic.xz as well.
IMAGE_FSTYPES = "wic.xz wic.bmap"
WKS_FILE = "lookout-sdimage.wks.in"
# The Raspberry Pi firmware boots the kernel itself: wic needs its own tools
# only, not oe-core's aarch64 default bootloaders (grub-efi, systemd-boot).
WKS_FILE_DEPENDS = "${WKS_FILE_DEPENDS_DEFAULT}"
LOOKOUT_BOOT_PART_SIZE ??= "128"
LOOKOUT_DATA_PART_SIZE ??= "256"

# The root filesystem is read-only: no need for the default 30 % headroom.
IMAGE_OVERHEAD_FACTOR = "1.1"

ROOTFS_POSTPROCESS_COMMAND += "lookout_ssh_authorized_keys"
lookout_ssh_authorized_keys[doc] = "Installs LOOKOUT_SSH_AUTHORIZED_KEYS for root when LOOKOUT_ENABLE_SSH is 1"

lookout_ssh_authorized_keys() {
    if [ "${LOOKOUT_ENABLE_SSH}" = "1" ] && [ -n "${LOOKOUT_SSH_AUTHORIZED_KEYS}" ]; then
        install -d -m 0700 ${IMAGE_ROOTFS}${ROOT_HOME}/.ssh
        printf '%s\n' "${LOOKOUT_SSH_AUTHORIZED_KEYS}" > ${IMAGE_ROOTFS}${ROOT_HOME}/.ssh/authorized_keys
        chmod 0600 ${IMAGE_ROOTFS}${ROOT_HOME}/.ssh/authorized_keys
    fi
}

# Build the host tool with the image, for `lookout-provision write-image`.
do_image_complete[depends] += "lookout-provision-native:do_populate_sysroot"
