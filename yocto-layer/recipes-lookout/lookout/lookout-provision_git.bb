SUMMARY = "Lookout factory provisioning tool"
DESCRIPTION = "lookout-provision creates Lookout device identities and writes \
               them into SD card images (lookout-provision write-image). Build \
               it for the build host as lookout-provision-native and run it \
               from the build tree with oe-run-native."
SECTION = "devel"

require lookout.inc

CVE_PRODUCT = "lookout-camera-provisioning"

# The provisioning package of the workspace (bin lookout-provision).
CARGO_SRC_DIR = "provisioning"
CARGO_BUILD_FLAGS += "--bin lookout-provision"

do_install() {
    install -d ${D}${bindir}
    install -m 0755 ${B}/target/${CARGO_TARGET_SUBDIR}/lookout-provision ${D}${bindir}/lookout-provision
}

BBCLASSEXTEND = "native"
