#!/usr/bin/env python3
"""Checks that the workspace's `rust-version` is true of the lock file.

Derives, with `cargo metadata`, the highest `rust-version` any locked
dependency declares (all features, for the targets Lookout is built for:
x86-64 and aarch64 Linux) and fails when the workspace claims less: a
contributor with the claimed Rust would find the build refused.

Usage: scripts/check-rust-version.py   (from anywhere in the repository)
"""
import json
import os
import subprocess
import sys

TARGETS = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]


def version_key(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def metadata(root, target):
    out = subprocess.run(
        ["cargo", "metadata", "--locked", "--format-version", "1", "--all-features",
         "--filter-platform", target],
        cwd=root, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    claimed = None
    needs = {}  # package "name version" -> rust-version
    for target in TARGETS:
        meta = metadata(root, target)
        members = set(meta["workspace_members"])
        by_id = {p["id"]: p for p in meta["packages"]}
        for member in members:
            rv = by_id[member].get("rust_version")
            if rv is None:
                sys.exit(f"check-rust-version: workspace member {by_id[member]['name']} declares no rust-version")
            if claimed is None or version_key(rv) < version_key(claimed):
                claimed = rv
        # Only what the resolver actually builds for this target.
        for node in meta["resolve"]["nodes"]:
            package = by_id[node["id"]]
            if node["id"] in members or not package.get("rust_version"):
                continue
            needs[f"{package['name']} {package['version']}"] = package["rust_version"]
    highest = max(needs.values(), key=version_key)
    top = sorted(name for name, rv in needs.items() if version_key(rv) == version_key(highest))
    print(f"workspace rust-version: {claimed}; highest rust-version of the locked dependencies: "
          f"{highest} ({', '.join(top)})")
    if version_key(claimed) < version_key(highest):
        sys.exit(f"check-rust-version: FAILED: the workspace claims rust-version {claimed}, but the locked "
                 f"dependencies need {highest}: raise [workspace.package] rust-version in Cargo.toml")
    print("check-rust-version: ok")


if __name__ == "__main__":
    main()
