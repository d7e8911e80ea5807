#!/usr/bin/env python3
"""Lint every recipe, bbappend, class and include of yocto-layer/ with oelint-adv.

Usage: run-oelint.py [--oelint PATH/TO/oelint-adv]   (run from anywhere)

* Release: wrynose; mode "all" (every conditional branch is checked).
* Suppressions come only from scripts/yocto/oelint-suppressions.ini: the [all]
  section is passed to oelint-adv with --suppress; [glob:PATTERN] sections drop
  the listed rules for findings located in matching files (oelint-adv cannot
  suppress per file, and findings in an included file are reported while
  linting the recipe that includes it).
* Layer-specific variable names are declared in oelint-constants.json.
* Fails (exit 1) on any error or warning; info findings are printed only.
"""

import argparse
import configparser
import fnmatch
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
LAYER = os.path.join(REPO_ROOT, "yocto-layer")
SUPPRESSIONS = os.path.join(HERE, "oelint-suppressions.ini")
CONSTANTS = os.path.join(HERE, "oelint-constants.json")
EXTENSIONS = (".bb", ".bbappend", ".bbclass", ".inc")
RELEASE = "wrynose"
FINDING = re.compile(r"^(?P<path>[^:\s][^:]*):(?P<line>\d+):(?P<severity>error|warning|info):(?P<id>[^:]+):(?P<msg>.*)$")


def read_suppressions(path):
    parser = configparser.ConfigParser(allow_no_value=True, delimiters=("=",), comment_prefixes=("#",))
    parser.optionxform = str  # rule ids are case-sensitive
    with open(path, encoding="utf-8") as f:
        parser.read_file(f)
    global_rules = list(parser["all"].keys()) if parser.has_section("all") else []
    per_glob = []
    for section in parser.sections():
        if section == "all":
            continue
        if not section.startswith("glob:"):
            raise SystemExit(f"run-oelint: {path}: unknown section [{section}]")
        per_glob.append((section[len("glob:"):], list(parser[section].keys())))
    return global_rules, per_glob


def layer_files():
    found = []
    for root, dirs, files in os.walk(LAYER):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.endswith(EXTENSIONS):
                found.append(os.path.relpath(os.path.join(root, name), REPO_ROOT))
    return found


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--oelint", default="oelint-adv", help="oelint-adv executable")
    args = ap.parse_args(argv[1:])

    global_rules, per_glob = read_suppressions(SUPPRESSIONS)
    files = layer_files()
    if not files:
        print("run-oelint: FAIL: no .bb/.bbappend/.bbclass/.inc files under yocto-layer/")
        return 1
    print(f"run-oelint: {len(files)} files, release {RELEASE}, suppressed everywhere: {', '.join(global_rules) or '-'}")
    for pattern, rules in per_glob:
        print(f"run-oelint: suppressed in {pattern}: {', '.join(rules)}")

    cmd = [args.oelint, "--release", RELEASE, "--mode", "all", "--relpaths", "--quiet", "--exit-zero",
           "--jobs", "2", "--messageformat", "{path}:{line}:{severity}:{id}:{msg}",
           "--constantmods", "+" + CONSTANTS]
    for rule in global_rules:
        cmd += ["--suppress", rule]
    cmd += files
    env = dict(os.environ, OELINT_SKIP_CONFIG="1")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout)
        sys.stdout.write(proc.stderr)
        print(f"run-oelint: FAIL: oelint-adv exited with status {proc.returncode}")
        return 1

    counts = {"error": 0, "warning": 0, "info": 0}
    dropped = 0
    unparsed = []
    for line in (proc.stdout + proc.stderr).splitlines():
        if not line.strip():
            continue
        m = FINDING.match(line)
        if not m:
            unparsed.append(line)
            continue
        path = os.path.normpath(m["path"])
        if any(fnmatch.fnmatch(path, pattern) and m["id"] in rules for pattern, rules in per_glob):
            dropped += 1
            continue
        counts[m["severity"]] += 1
        print(line)
    for line in unparsed:
        print(f"run-oelint: unexpected output: {line}")
    print(
        f"run-oelint: {counts['error']} errors, {counts['warning']} warnings, {counts['info']} info "
        f"({dropped} findings in generated files suppressed by glob)"
    )
    if unparsed:
        print("run-oelint: FAIL: could not parse all of oelint-adv's output")
        return 1
    if counts["error"] or counts["warning"]:
        print("run-oelint: FAIL: fix the errors and warnings above")
        return 1
    print("run-oelint: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
