# Sourced by the scripts in scripts/: installs Debian packages that are not
# installed yet, once per run, always preferring Debian 12 (bookworm).
#   apt_install PACKAGE...

_APT_SUDO=""
[ "$(id -u)" -eq 0 ] || _APT_SUDO="sudo"
_APT_UPDATED=0

apt_install() {
    local missing=() package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "==> installing Debian packages: ${missing[*]}"
    if [ "$_APT_UPDATED" -eq 0 ]; then
        $_APT_SUDO apt-get update -qq
        _APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $_APT_SUDO apt-get install -y -qq -o APT::Default-Release=bookworm "${missing[@]}"
}
