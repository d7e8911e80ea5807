# Sourced by scripts that need Debian 12 packages from suites the machine's
# apt sources may not list (bookworm-security's newer rustc-web,
# bookworm-backports' qemu) or for a foreign architecture (arm64).
#
# A PRIVATE apt configuration under $APT_PRIVATE_DIR (sources, package
# lists): the machine's apt sources are not changed. The mirror URIs are
# copied at run time from the machine's own apt sources; no host name is
# written into any file of the repository.
#
#   APT_PRIVATE_DIR=.ci-cache/apt-aarch64
#   apt_private_setup "bookworm bookworm-updates bookworm-backports" "bookworm-security" "amd64 arm64"
#   apt_private_install 'cargo-web=1.96*' qemu-system-arm/bookworm-backports ...
#   apt_private_download DIR linux-image-...:arm64

# apt_find_uri SUITE: prints "URI<TAB>signed-by" of the machine's first
# `deb` entry (deb822 .sources or one-line .list) for SUITE with component main.
apt_find_uri() {
    python3 - "$1" /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources <<'PY'
import os, re, sys

want = sys.argv[1]

def entries():
    for path in sys.argv[2:]:
        if not os.path.isfile(path):
            continue
        text = open(path, encoding="utf-8", errors="replace").read()
        if path.endswith(".sources"):
            for para in re.split(r"\n\s*\n", text):
                fields, key = {}, None
                for line in para.splitlines():
                    if line.startswith("#") or not line.strip():
                        continue
                    if line[0] in " \t" and key:
                        fields[key] += " " + line.strip()
                        continue
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    yield (fields.get("types", "").split(), uri, fields.get("suites", "").split(),
                           fields.get("components", "").split(), fields.get("signed-by", ""))
        else:
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                m = re.match(r"^(deb(?:-src)?)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
                if not m:
                    continue
                signed_by = ""
                for opt in (m.group(2) or "").split():
                    k, _, v = opt.partition("=")
                    if k == "signed-by":
                        signed_by = v
                yield ([m.group(1)], m.group(3), [m.group(4)], m.group(5).split(), signed_by)

for types, uri, suites, components, signed_by in entries():
    if "deb" in types and want in suites and "main" in components:
        if signed_by and not signed_by.startswith("/"):
            signed_by = ""  # an inline key is not reusable
        print(f"{uri}\t{signed_by}")
        break
else:
    sys.exit(f"no 'deb ... {want} main' entry in the machine's apt sources")
PY
}

_APT_PRIV_SUDO=""
[ "$(id -u)" -eq 0 ] || _APT_PRIV_SUDO="sudo"

# apt_private_setup "MAIN-ARCHIVE SUITES" "SECURITY SUITES" "ARCHITECTURES"
# Suites of the main archive use the URI of the machine's `bookworm` entry;
# security suites that of its `bookworm-security` entry. Runs apt-get update
# on the private lists (at most once an hour).
apt_private_setup() {
    local main_suites=$1 security_suites=$2 arches=$3 line uri signed
    : "${APT_PRIVATE_DIR:?set APT_PRIVATE_DIR}"
    mkdir -p "$APT_PRIVATE_DIR/sources.list.d" "$APT_PRIVATE_DIR/lists/partial" \
        "$APT_PRIVATE_DIR/cache/archives/partial"
    APT_PRIVATE_OPTS=(
        -o "Dir::Etc::SourceList=/dev/null"
        -o "Dir::Etc::SourceParts=$APT_PRIVATE_DIR/sources.list.d"
        -o "Dir::State::Lists=$APT_PRIVATE_DIR/lists"
        -o "Dir::Cache=$APT_PRIVATE_DIR/cache"
        -o "APT::Default-Release=bookworm"
        -o "DPkg::Lock::Timeout=600"
    )
    local sources="$APT_PRIVATE_DIR/sources.list.d/private.sources" new
    new=$(mktemp)
    echo "# Written by scripts/lib/apt-private.sh (private apt configuration)." >"$new"
    line=$(apt_find_uri bookworm) || return 1
    uri=${line%%$'\t'*}; signed=${line#*$'\t'}
    printf '\nTypes: deb\nURIs: %s\nSuites: %s\nComponents: main\nArchitectures: %s\nSigned-By: %s\n' \
        "$uri" "$main_suites" "$arches" "${signed:-/usr/share/keyrings/debian-archive-keyring.gpg}" >>"$new"
    if [ -n "$security_suites" ]; then
        line=$(apt_find_uri bookworm-security) || return 1
        uri=${line%%$'\t'*}; signed=${line#*$'\t'}
        printf '\nTypes: deb\nURIs: %s\nSuites: %s\nComponents: main\nArchitectures: %s\nSigned-By: %s\n' \
            "$uri" "$security_suites" "$arches" "${signed:-/usr/share/keyrings/debian-archive-keyring.gpg}" >>"$new"
    fi
    if ! cmp -s "$new" "$sources" || [ -z "$(find "$APT_PRIVATE_DIR/lists" -maxdepth 1 -name '*InRelease' -mmin -60)" ]; then
        mv "$new" "$sources"
        echo "==> apt-get update (private lists in $APT_PRIVATE_DIR: $main_suites $security_suites; $arches)"
        $_APT_PRIV_SUDO apt-get "${APT_PRIVATE_OPTS[@]}" update -qq
    else
        rm -f "$new"
    fi
}

# apt_private_install SPEC...: installs through the private configuration
# (SPEC as apt-get takes it: name, name:arch, name=version, name/suite).
apt_private_install() {
    DEBIAN_FRONTEND=noninteractive $_APT_PRIV_SUDO apt-get "${APT_PRIVATE_OPTS[@]}" \
        install -y -qq --no-install-recommends "$@"
    # The downloaded .deb files are not worth keeping in a CI cache.
    $_APT_PRIV_SUDO apt-get "${APT_PRIVATE_OPTS[@]}" clean
}

# apt_private_download DIR SPEC...: downloads .deb files into DIR (no install).
apt_private_download() {
    local dir=$1
    shift
    mkdir -p "$dir"
    (cd "$dir" && apt-get "${APT_PRIVATE_OPTS[@]}" download -qq "$@")
}
