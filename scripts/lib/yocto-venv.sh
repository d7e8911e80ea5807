# Sourced by the Yocto scripts: the Python tools pinned in
# scripts/yocto/requirements.txt (kas, oelint-adv) in a virtualenv, rebuilt
# only when the requirements change.
#   yocto_venv VENV_DIR REQUIREMENTS_FILE

yocto_venv() {
    local venv=$1 requirements=$2 stamp sum
    python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
    stamp="$venv/.requirements.sha256"
    sum="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [ ! -x "$venv/bin/python" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
        echo "yocto-venv: installing $(grep -v '^#' "$requirements" | xargs) into $venv"
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$sum" > "$stamp"
    else
        echo "yocto-venv: $(grep -v '^#' "$requirements" | xargs) already installed in $venv"
    fi
}
