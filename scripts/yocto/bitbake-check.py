#!/usr/bin/env python3
"""Helper of scripts/yocto/bitbake-check.sh: everything around the real bitbake run.

Subcommands (all print what they check and exit 1 on the first failed check):

  pins ARCHIVE_DIR
      The layer archives against ARCHIVE_DIR/SHA256SUMS (every archive listed,
      every listed archive present, every sum right) and against the kas pins:
      each repository with a url in the machine files must have exactly one
      archive NAME-*.tar.xz whose embedded commit id (the pax header `git
      archive` writes, as `git get-tar-commit-id` reads it) is the pinned
      commit. Prints one line per layer: NAME COMMIT ARCHIVE.
  pins-selftest ARCHIVE_DIR
      The pin check must fail, naming the layer, when a kas pin is changed or
      an archive's sum is wrong (on temporary copies; nothing is parsed).
  conf KAS_FILE LAYERS_DIR SOURCE_DIR BUILD_DIR
      Writes BUILD_DIR/conf/bblayers.conf and local.conf as `kas build
      KAS_FILE` would (kas's own loader merges the includes; same layout and
      headers as kas 5.5 writes), with the repositories at LAYERS_DIR/NAME and
      this repository at SOURCE_DIR, plus an offline block (BB_NO_NETWORK).
  image-env MACHINE ENV_FILE
      `bitbake -e lookout-image` output: installs lookout, no bluez-firmware
      while the distro opts out of Bluetooth, kernel-modules once, the layer's
      wks file, a read-only root, no bootloader in WKS_FILE_DEPENDS.
  recipe-env ENV_FILE CARGO_LOCK
      `bitbake -e lookout` output: DEPENDS has libcamera, SRC_URI has a
      crate:// entry for every crates.io package of Cargo.lock (and no other),
      the package-specific FILES and SYSTEMD_SERVICE are the recipe's.
  graph MACHINE TASK_DEPENDS_DOT
      `bitbake -g lookout-image` output: lookout and the kernel are in the
      graph, grub-efi, systemd-boot and bluez-firmware are not.
"""

import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
KAS_DIR = os.path.join(REPO_ROOT, "yocto-layer", "kas")
MACHINES = ("raspberrypi4-64", "raspberrypi5", "raspberrypi0-2w-64")


class CheckFailed(Exception):
    """A check failed; the message says which and why."""


def say(msg):
    print(f"bitbake-check: {msg}", flush=True)


# ------------------------------------------------------------------ kas
def kas_config(kas_files):
    """The merged configuration of KAS_FILES, as `kas build a.yml:b.yml` loads it."""
    import argparse
    from kas import context, includehandler
    if not os.environ.get("KAS_WORK_DIR"):
        os.environ["KAS_WORK_DIR"] = tempfile.mkdtemp(prefix="bitbake-check-kas-")
    context.create_global_context(argparse.Namespace(no_color=True, update=False, force_checkout=False))
    config, missing = includehandler.IncludeHandler(list(kas_files), use_lock=False).get_config()
    if missing:
        raise CheckFailed(f"kas includes from repositories that are not available: {missing}")
    return config


def kas_pins(kas_dir):
    """{repo name: commit} for every repository with a url, over all machine files
    (which must agree)."""
    pins = {}
    for machine in MACHINES:
        path = os.path.join(kas_dir, f"{machine}.yml")
        for name, repo in (kas_config([path]).get("repos") or {}).items():
            if not isinstance(repo, dict) or not repo.get("url"):
                continue
            commit = repo.get("commit")
            if pins.setdefault(name, commit) != commit:
                raise CheckFailed(f"layer {name}: {machine}.yml pins {commit}, another machine file {pins[name]}")
    return pins


# ------------------------------------------------------------------ pins
def archive_commit(path):
    """The commit id `git archive` stored in the archive's pax global header."""
    with tarfile.open(path, "r|xz") as tar:
        tar.next()
        return (tar.pax_headers or {}).get("comment")


def check_pins(archive_dir, kas_dir=KAS_DIR):
    sums_path = os.path.join(archive_dir, "SHA256SUMS")
    if not os.path.isfile(sums_path):
        raise CheckFailed(f"{sums_path} is missing")
    listed = {}
    with open(sums_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                digest, name = line.split(None, 1)
                listed[name.strip().lstrip("*")] = digest.lower()
    present = sorted(os.path.basename(p) for p in glob.glob(os.path.join(archive_dir, "*.tar.xz")))
    for name in present:
        if name not in listed:
            raise CheckFailed(f"archive {name} is not in SHA256SUMS")
    for name, digest in sorted(listed.items()):
        path = os.path.join(archive_dir, name)
        if not os.path.isfile(path):
            raise CheckFailed(f"SHA256SUMS lists {name}, which is missing")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != digest:
            raise CheckFailed(f"layer archive {name}: sha256 {h.hexdigest()}, SHA256SUMS says {digest}")
    say(f"SHA256SUMS: {len(listed)} archives, all sums match")

    result = []
    for name, commit in sorted(kas_pins(kas_dir).items()):
        archives = [a for a in present if re.fullmatch(re.escape(name) + r"-[0-9a-f]+\.tar\.xz", a)]
        if len(archives) != 1:
            raise CheckFailed(f"layer {name}: expected one archive {name}-<commit>.tar.xz in {archive_dir}, "
                              f"found {archives or 'none'}")
        embedded = archive_commit(os.path.join(archive_dir, archives[0]))
        if embedded != commit:
            raise CheckFailed(f"layer {name}: kas pins commit {commit}, but {archives[0]} is commit {embedded}")
        say(f"pin {name}: {commit} = {archives[0]}")
        result.append((name, commit, archives[0]))
    unused = set(present) - {a for _, _, a in result}
    if unused:
        raise CheckFailed(f"archives that no kas pin names: {sorted(unused)}")
    return result


def must_fail(run, needle, what):
    """Self-test step: `run` must raise CheckFailed, and its message must name `needle`."""
    try:
        run()
    except CheckFailed as e:
        if needle not in str(e):
            raise CheckFailed(f"self-test: {what} failed without naming {needle!r}: {e}")
        say(f"self-test: {what} fails: {e}")
    else:
        raise CheckFailed(f"self-test: {what} passed the check")


def pins_selftest(archive_dir):
    """Break a copy of the pins and of the sums: the check must fail and name the layer."""
    tmp = tempfile.mkdtemp(prefix="bitbake-check-selftest-")
    try:
        kas_copy = os.path.join(tmp, "yocto-layer", "kas")
        shutil.copytree(KAS_DIR, kas_copy)
        common = os.path.join(kas_copy, "include", "common.yml")
        with open(common, encoding="utf-8") as f:
            text = f.read()
        pins = kas_pins(KAS_DIR)
        broken = text.replace(pins["meta-raspberrypi"], "de0bdec5da27166901d0490d89b930fdc6e5b781")
        with open(common, "w", encoding="utf-8") as f:
            f.write(broken)
        # kas resolves includes relative to the repository of the top file.
        subprocess.run(["git", "init", "-q", tmp], check=True)
        must_fail(lambda: check_pins(archive_dir, kas_copy), "layer meta-raspberrypi", "a broken meta-raspberrypi pin")

        archives = os.path.join(tmp, "archives")
        os.mkdir(archives)
        for path in glob.glob(os.path.join(archive_dir, "*")):
            os.symlink(path, os.path.join(archives, os.path.basename(path)))
        os.unlink(os.path.join(archives, "SHA256SUMS"))
        with open(os.path.join(archive_dir, "SHA256SUMS"), encoding="utf-8") as f:
            sums = f.read()
        target = next(line for line in sums.splitlines() if "meta-yocto-" in line)
        with open(os.path.join(archives, "SHA256SUMS"), "w", encoding="utf-8") as f:
            f.write(sums.replace(target, "0" * 64 + target[64:]))
        must_fail(lambda: check_pins(archives), "meta-yocto-", "a wrong sum in SHA256SUMS")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ conf
OFFLINE_CONF = """\
# bitbake-check (scripts/yocto/bitbake-check.sh): parse offline, nothing is built
BB_NO_NETWORK = "1"
DL_DIR = "${TOPDIR}/downloads"
SSTATE_DIR = "${TOPDIR}/sstate-cache"
"""


def write_conf(kas_file, layers_dir, source_dir, build_dir):
    """bblayers.conf and local.conf as kas 5.5's repos_checkout/write_bbconfig writes them."""
    config = kas_config([kas_file])
    layers = []
    for name, repo in (config.get("repos") or {}).items():
        repo = repo or {}
        top = source_dir if name == "lookout" else os.path.join(layers_dir, name)
        if not repo.get("url") and name != "lookout":
            raise CheckFailed(f"kas repository {name} has no url and is not this repository")
        if not os.path.isdir(top):
            raise CheckFailed(f"layer {name}: {top} does not exist (no archive unpacked for it?)")
        repo_layers = repo.get("layers") or {".": None}
        for layer, state in repo_layers.items():
            if state in ("disabled", "excluded", "n", "no", "0", "false", False, 0):
                continue
            layers.append(os.path.normpath(os.path.join(top, layer)))

    def header(key):
        return "".join(f"# {k}\n{v}\n" for k, v in sorted((config.get(key) or {}).items()))

    os.makedirs(os.path.join(build_dir, "conf"), exist_ok=True)
    with open(os.path.join(build_dir, "conf", "bblayers.conf"), "w", encoding="utf-8") as f:
        f.write(header("bblayers_conf_header"))
        f.write('BBLAYERS ?= " \\\n    ' + " \\\n    ".join(sorted(layers)) + '"\n')
        f.write('BBPATH ?= "${TOPDIR}"\n')
        f.write('BBFILES ??= ""\n')
    with open(os.path.join(build_dir, "conf", "local.conf"), "w", encoding="utf-8") as f:
        f.write(header("local_conf_header"))
        f.write(f'MACHINE ??= "{config.get("machine")}"\n')
        f.write(f'DISTRO ??= "{config.get("distro")}"\n')
        f.write('BBMULTICONFIG ?= ""\n')
        f.write(OFFLINE_CONF)
    say(f"conf from {os.path.relpath(kas_file, REPO_ROOT)}: {len(layers)} layers, machine {config.get('machine')}, "
        f"distro {config.get('distro')}, target {config.get('target')}")


# ------------------------------------------------------------------ bitbake -e
def read_env(path):
    """The variables of a `bitbake -e` output (continuation lines joined)."""
    env = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    text = text.replace(" \\\n", "\n")
    for m in re.finditer(r'^(?:export )?([A-Za-z0-9_][A-Za-z0-9_:.+${}/-]*)="((?:[^"\\]|\\.)*)"$', text, re.M | re.S):
        env[m.group(1)] = m.group(2).replace('\\"', '"').replace("\\$", "$")
    if "PN" not in env:
        raise CheckFailed(f"{path} does not look like `bitbake -e` output (no PN)")
    return env


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)
    say(f"ok: {msg}")


def image_env(machine, path):
    env = read_env(path)
    install = env.get("IMAGE_INSTALL", "").split()
    check(env.get("MACHINE") == machine, f"{machine}: MACHINE is {env.get('MACHINE')}")
    check("lookout" in install, f"{machine}: IMAGE_INSTALL installs lookout")
    check(install.count("kernel-modules") == 1, f"{machine}: IMAGE_INSTALL has kernel-modules once "
          f"(it has it {install.count('kernel-modules')} times)")
    bt = "bluetooth" in env.get("DISTRO_FEATURES", "").split()
    bluez = [p for p in install if p.startswith("bluez-firmware")]
    check(bt or not bluez, f"{machine}: no Bluetooth firmware in IMAGE_INSTALL without the bluetooth "
          f"distro feature (found {bluez or 'none'})")
    check("read-only-rootfs" in env.get("IMAGE_FEATURES", "").split(), f"{machine}: IMAGE_FEATURES has read-only-rootfs")
    check(env.get("WKS_FILE") == "lookout-sdimage.wks.in", f"{machine}: WKS_FILE is {env.get('WKS_FILE')}")
    # A .wks.in is a template: WKS_TEMPLATE_PATH is where bitbake found it.
    wks = env.get("WKS_TEMPLATE_PATH", "")
    check(wks.endswith("/lookout/yocto-layer/files/wic/lookout-sdimage.wks.in"),
          f"{machine}: the wks template bitbake found is the layer's ({wks})")
    deps = env.get("WKS_FILE_DEPENDS", "").split()
    check(not {"grub-efi", "systemd-boot"} & set(deps), f"{machine}: WKS_FILE_DEPENDS has no bootloader")
    check("wic" in env.get("IMAGE_FSTYPES", ""), f"{machine}: IMAGE_FSTYPES is {env.get('IMAGE_FSTYPES')}")
    check(env.get("DISTRO") == "lookout" and "lookout" not in env.get("OVERRIDES", "").split(":"),
          f"{machine}: DISTRO lookout, OVERRIDES without 'lookout' ({env.get('DISTROOVERRIDES')})")


def cargo_lock_crates(path):
    with open(path, "rb") as f:
        lock = tomllib.load(f)
    return {f"{p['name']}-{p['version']}" for p in lock.get("package", [])
            if p.get("source", "").startswith("registry+")}


def recipe_env(path, cargo_lock):
    env = read_env(path)
    check(env.get("PN") == "lookout", f"PN is {env.get('PN')}")
    check("libcamera" in env.get("DEPENDS", "").split(), "lookout DEPENDS on libcamera")
    listed = set()
    for uri in env.get("SRC_URI", "").split():
        m = re.match(r"crate://crates\.io/([^/;]+)/([^/;]+)", uri)
        if m:
            listed.add(f"{m.group(1)}-{m.group(2)}")
    wanted = cargo_lock_crates(cargo_lock)
    missing, extra = sorted(wanted - listed), sorted(listed - wanted)
    check(not missing and not extra, f"lookout SRC_URI lists every crate of Cargo.lock ({len(listed)} of "
          f"{len(wanted)}; missing {missing[:5] or 'none'}, extra {extra[:5] or 'none'})")
    check("/var/lib/lookout" in env.get("FILES:lookout", ""), "FILES:lookout has /var/lib/lookout")
    check(env.get("SYSTEMD_SERVICE:lookout") == "lookout.service", "SYSTEMD_SERVICE:lookout is lookout.service")
    say(f"lookout: rust {env.get('RUSTVERSION', '?').rstrip('%')}, PV {env.get('PV')}")


def graph(machine, dot):
    with open(dot, encoding="utf-8") as f:
        text = f.read()
    recipes = set(re.findall(r'^"([^".]+)\.do_[a-z_]+"', text, re.M))
    check("lookout" in recipes and "lookout-image" in recipes, f"{machine}: task graph has lookout ({len(recipes)} recipes)")
    check(any(r.startswith("linux-raspberrypi") for r in recipes), f"{machine}: task graph has linux-raspberrypi")
    check("libcamera" in recipes, f"{machine}: task graph has libcamera")
    bad = sorted(r for r in recipes if r in ("grub-efi", "systemd-boot") or r.startswith("bluez-firmware"))
    check(not bad, f"{machine}: no grub-efi, systemd-boot or bluez-firmware in the task graph (found {bad or 'none'})")


def main(argv):
    cmds = {
        "pins": (1, lambda a: check_pins(a[0])),
        "pins-selftest": (1, lambda a: pins_selftest(a[0])),
        "conf": (4, lambda a: write_conf(*a)),
        "image-env": (2, lambda a: image_env(*a)),
        "recipe-env": (2, lambda a: recipe_env(*a)),
        "graph": (2, lambda a: graph(*a)),
    }
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][0]:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        cmds[argv[1]][1](argv[2:])
    except CheckFailed as e:
        say(f"FAIL: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
