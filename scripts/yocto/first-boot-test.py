#!/usr/bin/env python3
"""First boot of a provisioned SD card, without the card and without bitbake.

Usage (as root): first-boot-test.py PATH/TO/lookout PATH/TO/lookout-provision

What the image does at first boot depends on several files agreeing on paths:
the partition layout (`lookout-sdimage.wks.in`: where the FAT boot partition
and the data partition are mounted), where `lookout-provision write-image`
puts the identity and the Wi-Fi settings on the FAT, and the units that read
them (`lookout.service`, `lookout-hostname.service`, `lookout-wifi.service`).
This test takes every path and command line from those layer files, not from
a copy of them, and plays the boot:

 1. Builds an SD image with the wks's partition kinds (MBR: FAT32, ext4,
    ext4), provisions it with the real `lookout-provision` (identity and
    Wi-Fi), and verifies it.
 2. Copies the FAT's `lookout/` folder out with mtools and gives it the
    owner and modes the wks's mount options give it on the device
    (uid=0, gid=LOOKOUT_GID, fmask, dmask); this kernel has no vfat to mount
    the partition itself.
 3. In private mount, UTS and network namespaces (only `lo`): puts that
    folder at the wks's boot mount point, an empty state folder at the data
    partition's mount point (StateDirectory= owner and mode), then
      - runs `lookout-hostname` (the service's ExecStart): the host name must
        become the identity's;
      - runs `lookout` with the service's ExecStart arguments as the service
        runs it (User=/Group= LOOKOUT_UID/GID, CAP_NET_BIND_SERVICE as the
        only ambient capability, UMask=0077): it must import the identity
        from the boot partition, serve it on port 443 and redirect port 80,
        and keep a 0600 copy in its state folder; a second start must use
        that copy;
      - runs `wpa_supplicant` with the Wi-Fi service's arguments (only the
        interface name changed, as there is no wlan0): it must parse the
        provisioned file as the provisioned network.

Python standard library only; needs mtools, dosfstools, fdisk, e2fsprogs,
util-linux (unshare, setpriv), iproute2 and wpasupplicant. Prints PASS/FAIL
lines and exits non-zero on failure. Processes it starts are ended by PID.
"""

import json
import os
import re
import shlex
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYER = REPO / "yocto-layer"
WKS = LAYER / "files/wic/lookout-sdimage.wks.in"
LAYER_CONF = LAYER / "conf/layer.conf"
LOOKOUT_UNIT = LAYER / "recipes-lookout/lookout/files/lookout.service"
NETWORK_FILES = LAYER / "recipes-lookout/lookout-network/files"
HOSTNAME_UNIT = NETWORK_FILES / "lookout-hostname.service"
WIFI_UNIT = NETWORK_FILES / "lookout-wifi.service"

SECTOR = 512
WIFI_SSID = 'Lookout "lab" #1'
WIFI_PASSPHRASE = 'first boot pa"ss#word'
START_TIMEOUT_S = 60.0


class Failure(Exception):
    pass


def log(message):
    print(f"first-boot-test: {message}", flush=True)


def check(condition, message):
    if not condition:
        raise Failure(message)
    log(f"ok: {message}")


def run(argv, **kwargs):
    """Runs argv, which must succeed; returns its stdout as text."""
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise Failure(f"{' '.join(map(shlex.quote, map(str, argv)))} failed ({result.returncode}):\n"
                      f"{result.stdout}{result.stderr}")
    return result.stdout


# ---------------------------------------------------------------- layer files

def unit_value(unit, key):
    """The last `key=` value of a systemd unit file."""
    values = [line.split("=", 1)[1].strip() for line in unit.read_text().splitlines()
              if line.startswith(f"{key}=")]
    if not values:
        raise Failure(f"{unit.name} has no {key}=")
    return values[-1]


def layer_default(name):
    match = re.search(rf'^{name}\s*\?\?=\s*"(\d+)"', LAYER_CONF.read_text(), re.M)
    if not match:
        raise Failure(f"conf/layer.conf has no default for {name}")
    return int(match.group(1))


def wks_partitions():
    """(mount point, fstype, fsoptions) of each `part` line of the wks."""
    parts = []
    for line in WKS.read_text().splitlines():
        if not line.startswith("part "):
            continue
        words = shlex.split(line)
        fstype = next((w.split("=", 1)[1] for w in words if w.startswith("--fstype=")), "")
        options = words[words.index("--fsoptions") + 1] if "--fsoptions" in words else ""
        parts.append((words[1], fstype, options))
    return parts


def layout():
    """Everything the boot depends on, read from the layer."""
    gid = layer_default("LOOKOUT_GID")
    parts = wks_partitions()
    boot = [p for p in parts if p[1] == "vfat"]
    data = [p for p in parts if p[0] not in ("/",) and p[1] == "ext4"]
    if len(boot) != 1 or len(data) != 1:
        raise Failure(f"expected one vfat and one ext4 data partition in {WKS.name}: {parts}")
    fat_options = dict(o.split("=", 1) for o in boot[0][2].split(",") if "=" in o)
    fat_options = {k: v.replace("${LOOKOUT_GID}", str(gid)) for k, v in fat_options.items()}
    return {
        "uid": layer_default("LOOKOUT_UID"),
        "gid": gid,
        "boot_mount": boot[0][0],
        "data_mount": data[0][0],
        "fat_gid": int(fat_options["gid"]),
        "fat_fmask": int(fat_options["fmask"], 8),
        "fat_dmask": int(fat_options["dmask"], 8),
        "lookout_exec": shlex.split(unit_value(LOOKOUT_UNIT, "ExecStart")),
        "state_directory": unit_value(LOOKOUT_UNIT, "StateDirectory"),
        "state_mode": int(unit_value(LOOKOUT_UNIT, "StateDirectoryMode"), 8),
        "umask": int(unit_value(LOOKOUT_UNIT, "UMask"), 8),
        "ambient": unit_value(LOOKOUT_UNIT, "AmbientCapabilities"),
        "hostname_exec": unit_value(HOSTNAME_UNIT, "ExecStart"),
        "wifi_condition": unit_value(WIFI_UNIT, "ConditionPathExists"),
        "wifi_exec": shlex.split(unit_value(WIFI_UNIT, "ExecStart")),
    }


# ---------------------------------------------------------------- outside: the card

def make_card(tmp, provision):
    """A provisioned image; returns (image, boot offset, identity folder)."""
    image = tmp / "lookout.wic"
    with open(image, "wb") as f:
        f.truncate(100 * 1024 * 1024)
    # The wks's order and kinds: FAT32 boot (active), ext4 root, ext4 data.
    script = ("label: dos\n"
              "start=8192, size=131072, type=c, bootable\n"
              "start=139264, size=32768, type=83\n"
              "start=172032, size=32768, type=83\n")
    run(["sfdisk", "--quiet", str(image)], input=script)
    run(["mkfs.vfat", "-n", "boot", "-F", "32", "-s", "1", "--offset", "8192", str(image),
         str(131072 * SECTOR // 1024)])
    for start in (139264, 172032):
        run(["mkfs.ext4", "-q", "-F", "-E", f"offset={start * SECTOR}", str(image),
             str(32768 * SECTOR // 1024)])

    identities = tmp / "identities"
    run([provision, "new", "--out", str(identities)])
    (folder,) = list(identities.iterdir())
    passphrase = tmp / "wifi-passphrase.txt"
    passphrase.write_text(WIFI_PASSPHRASE + "\n")
    out = run([provision, "write-image", "--image", str(image), "--identity", str(folder),
               "--wifi-ssid", WIFI_SSID, "--wifi-country", "SE",
               "--wifi-passphrase-file", str(passphrase)])
    log(out.strip())
    run([provision, "verify", str(image), "--expect", str(folder)])
    return image, 8192 * SECTOR, folder


def extract_boot_folder(image, offset, cfg, tmp):
    """The FAT's lookout/ folder, with the owner and modes its mount gives it."""
    boot = tmp / "bootfs"
    boot.mkdir()
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    run(["mcopy", "-s", "-n", "-i", f"{image}@@{offset}", "::lookout", str(boot)], env=env)
    for path in [boot, *boot.rglob("*")]:
        os.chown(path, 0, cfg["fat_gid"])
        os.chmod(path, (0o777 & ~cfg["fat_dmask"]) if path.is_dir() else (0o666 & ~cfg["fat_fmask"]))
    return boot


# ---------------------------------------------------------------- inside: the boot

def mount_at(mount_point, source):
    """Bind `source` (or an empty tmpfs) at `mount_point`, hiding what is there."""
    mount_point = Path(mount_point)
    parent = mount_point.parent
    # The parent of a mount point may not exist on this host, or hold things
    # the device would not have: cover the nearest existing ancestor.
    cover = parent
    while not cover.exists():
        cover = cover.parent
    if cover == Path("/"):
        raise Failure(f"no folder on this host to cover for {mount_point} (a tmpfs over / would hide everything)")
    run(["mount", "-t", "tmpfs", "-o", "mode=0755", "none", str(cover)])
    mount_point.mkdir(parents=True, exist_ok=True)
    if source is not None:
        run(["mount", "--bind", str(source), str(mount_point)])
        run(["mount", "-o", "remount,bind,ro", str(mount_point)])


def https_get_json(url):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return json.loads(response.read())


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def start_lookout(cfg, lookout_bin, log_path):
    argv = [lookout_bin] + cfg["lookout_exec"][1:]
    caps = cfg["ambient"].lower().replace("cap_", "")
    wrapped = ["setpriv", f"--reuid={cfg['uid']}", f"--regid={cfg['gid']}", f"--groups={cfg['gid']}",
               f"--inh-caps=-all,+{caps}", f"--ambient-caps=-all,+{caps}", "--"] + argv
    log(f"starting (as uid {cfg['uid']}, ambient {cfg['ambient']}): {' '.join(argv)}")
    output = open(log_path, "ab")
    old_umask = os.umask(cfg["umask"])
    try:
        return subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    finally:
        os.umask(old_umask)
        output.close()


def stop(child):
    if child.poll() is None:
        os.kill(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=5)


def wait_for_info(child, log_path):
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error = None
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise Failure(f"lookout exited with status {child.returncode}:\n{Path(log_path).read_text()}")
        try:
            return https_get_json("https://[::1]:443/api/info")
        except OSError as e:
            last_error = e
            time.sleep(0.2)
    raise Failure(f"no answer on https://[::1]:443/api/info within {START_TIMEOUT_S:.0f} s ({last_error}):\n"
                  f"{Path(log_path).read_text()}")


def boot(cfg, lookout_bin, boot_folder, identity, tmp):
    run(["ip", "link", "set", "lo", "up"])
    mount_at(cfg["boot_mount"], boot_folder)
    mount_at(cfg["data_mount"], None)
    state_dir = Path("/var/lib") / cfg["state_directory"]
    check(state_dir == Path(cfg["data_mount"]),
          f"StateDirectory={cfg['state_directory']} is the data partition's mount point {cfg['data_mount']}")
    os.chown(state_dir, cfg["uid"], cfg["gid"])
    os.chmod(state_dir, cfg["state_mode"])

    # The host name, before the network and the appliance start.
    script = NETWORK_FILES / Path(cfg["hostname_exec"]).name
    log(run(["sh", str(script)]).strip())
    hostname = Path("/proc/sys/kernel/hostname").read_text().strip()
    check(hostname == identity["hostname"],
          f"lookout-hostname set the host name {hostname!r} from the provisioned identity")

    # The appliance, as lookout.service starts it.
    log_path = tmp / "lookout.log"
    child = start_lookout(cfg, lookout_bin, log_path)
    try:
        info = wait_for_info(child, log_path)
        check(info.get("hostname") == f"{identity['hostname']}.local"
              and info.get("device_id") == identity["device_id"],
              f"lookout serves device {info.get('device_id')} ({info.get('hostname')}) on port 443")
        check(info.get("identity") == "boot-partition",
              "lookout imported the identity from the boot partition (identity: boot-partition)")
        redirect = urllib.request.build_opener(NoRedirect)
        request = urllib.request.Request("http://[::1]:80/", headers={"Host": f"{hostname}.local"})
        try:
            redirect.open(request, timeout=5)
            status, location = None, None
        except urllib.error.HTTPError as e:
            status, location = e.code, e.headers.get("Location")
        check(status == 308 and location == f"https://{hostname}.local/",
              f"port 80 redirects to {location} ({status})")
    finally:
        stop(child)
    copy = Path(cfg["data_mount"]) / "identity.json"
    check(copy.is_file(), f"the identity was copied to {copy}")
    mode = copy.stat().st_mode & 0o777
    check(copy.stat().st_uid == cfg["uid"] and mode == 0o600,
          f"{copy} belongs to uid {copy.stat().st_uid} with mode {mode:o}")
    check(json.loads(copy.read_text())["device_id"] == identity["device_id"], "the copy is the same identity")

    # The second boot uses the copy.
    child = start_lookout(cfg, lookout_bin, log_path)
    try:
        info = wait_for_info(child, log_path)
        check(info.get("identity") == "state" and info.get("device_id") == identity["device_id"],
              "the second start uses the copy in the state folder (identity: state)")
    finally:
        stop(child)

    # Wi-Fi: wpa_supplicant as lookout-wifi.service starts it, on a missing
    # interface (there is no wlan0 here): it reads the file, then gives up.
    check(Path(cfg["wifi_condition"]).is_file(), f"{cfg['wifi_condition']} exists, so lookout-wifi.service starts")
    argv = list(cfg["wifi_exec"])
    argv[argv.index("-i") + 1] = "lktnone0"
    argv[0] = "wpa_supplicant"
    result = subprocess.run(argv + ["-dd"], capture_output=True, text=True)
    out = result.stdout + result.stderr
    ssid_hex = " ".join(f"{b:02x}" for b in WIFI_SSID.encode())
    check("Failed to read or parse" not in out and "country='SE'" in out and ssid_hex in out
          and "Priority group 0" in out,
          f"wpa_supplicant read {cfg['wifi_condition']} as network {WIFI_SSID!r} in SE")


def inside(args):
    cfg = json.loads(Path(args[0]).read_text())
    try:
        boot(cfg["layout"], cfg["lookout"], Path(cfg["boot_folder"]), cfg["identity"], Path(cfg["tmp"]))
    except Failure as e:
        print(f"first-boot-test: FAIL: {e}", flush=True)
        return 1
    return 0


def main(args):
    if len(args) == 2 and args[0] == "--inside":
        return inside(args[1:])
    if len(args) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    lookout_bin, provision = (str(Path(a).resolve()) for a in args)
    if os.geteuid() != 0:
        print("first-boot-test: FAIL: needs root (namespaces, bind mounts, setpriv to the service user)")
        return 1
    try:
        cfg = layout()
        log(f"layout from the layer: {json.dumps({k: v for k, v in cfg.items() if 'exec' not in k})}")
        with tempfile.TemporaryDirectory(prefix="lookout-first-boot-") as tmp_name:
            tmp = Path(tmp_name)
            os.chmod(tmp, 0o755)  # the service user must reach the boot folder
            image, offset, folder = make_card(tmp, provision)
            identity = json.loads((folder / "identity.json").read_text())
            boot_folder = extract_boot_folder(image, offset, cfg, tmp)
            config = tmp / "inside.json"
            config.write_text(json.dumps({"layout": cfg, "lookout": lookout_bin, "boot_folder": str(boot_folder),
                                          "identity": identity, "tmp": str(tmp)}))
            result = subprocess.run(["unshare", "--mount", "--uts", "--net", "--propagation", "private",
                                     sys.executable, __file__, "--inside", str(config)])
            if result.returncode != 0:
                return 1
    except Failure as e:
        print(f"first-boot-test: FAIL: {e}", flush=True)
        return 1
    print("first-boot-test: PASS", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
