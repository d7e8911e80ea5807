SUMMARY = "Network configuration of the Lookout appliance"
DESCRIPTION = "systemd-networkd profiles for Ethernet (DHCP, IPv6 link-local) \
               and Wi-Fi, mDNS in systemd-resolved for the host name taken \
               from the device identity (lookout-<id>.local), NTP fallback \
               servers for systemd-timesyncd, and lookout-wifi.service, which \
               joins the Wi-Fi network configured on the boot partition \
               (/boot/firmware/lookout/wifi.conf)."
# Placeholder: replace with the project's public URL.
HOMEPAGE = "https://lookout.invalid/"
SECTION = "net"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://COPYING.MIT;md5=937bc33232eb52fa745a5c2c19ca01c8"

SRC_URI = "\
    file://COPYING.MIT \
    file://70-lookout-wired.network \
    file://70-lookout-wireless.network \
    file://lookout-mdns.conf \
    file://lookout-ntp.conf \
    file://lookout-wifi.service \
    file://lookout-hostname \
    file://lookout-hostname.service \
    file://lookout-hostname.path \
"

S = "${UNPACKDIR}"

inherit allarch features_check systemd

REQUIRED_DISTRO_FEATURES = "systemd"

SYSTEMD_SERVICE:${PN} = "lookout-hostname.path lookout-hostname.service lookout-wifi.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install() {
    install -d ${D}${systemd_unitdir}/network
    install -m 0644 ${S}/70-lookout-wired.network ${D}${systemd_unitdir}/network/
    install -m 0644 ${S}/70-lookout-wireless.network ${D}${systemd_unitdir}/network/

    install -d ${D}${systemd_unitdir}/resolved.conf.d
    install -m 0644 ${S}/lookout-mdns.conf ${D}${systemd_unitdir}/resolved.conf.d/

    install -d ${D}${systemd_unitdir}/timesyncd.conf.d
    install -m 0644 ${S}/lookout-ntp.conf ${D}${systemd_unitdir}/timesyncd.conf.d/

    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/lookout-wifi.service ${D}${systemd_system_unitdir}/
    sed -i -e 's#/usr/sbin/wpa_supplicant#${sbindir}/wpa_supplicant#' ${D}${systemd_system_unitdir}/lookout-wifi.service

    install -d ${D}${libexecdir}
    install -m 0755 ${S}/lookout-hostname ${D}${libexecdir}/lookout-hostname
    install -m 0644 ${S}/lookout-hostname.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/lookout-hostname.path ${D}${systemd_system_unitdir}/
    sed -i -e 's#/usr/libexec/lookout-hostname#${libexecdir}/lookout-hostname#' ${D}${systemd_system_unitdir}/lookout-hostname.service
}

FILES:${PN} += "${systemd_unitdir}/network ${systemd_unitdir}/resolved.conf.d ${systemd_unitdir}/timesyncd.conf.d"

RDEPENDS:${PN} = "wpa-supplicant"
