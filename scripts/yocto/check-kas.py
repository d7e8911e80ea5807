#!/usr/bin/env python3
"""Validate the kas configurations under yocto-layer/kas/ without fetching anything.

Usage: check-kas.py   (needs PyYAML and jsonschema, both installed with kas)

For every *.yml below yocto-layer/kas/:
  * it parses as YAML and validates against the JSON schema that ships with the
    installed kas (kas/schema-kas.json, the schema kas publishes), and its
    header.version is one the installed kas accepts;
  * every repo-relative include exists and is validated too;
  * every `commit:` line is a quoted 40-hex-digit string, and every repository
    with a url pins both a branch and a commit;
and kas's own loader (kas.includehandler, no network) loads every machine file
alone and combined with each add-on (debug-ssh.yml); the result must name a machine, the lookout distro and the lookout-image target and
pin bitbake, openembedded-core, meta-yocto, meta-openembedded and
meta-raspberrypi. kas itself is not run: it would clone the layers.
Prints what it checks, exits 1 on the first file with problems (after listing
all problems).
"""

import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
KAS_DIR = os.path.join(REPO_ROOT, "yocto-layer", "kas")
REQUIRED_REPOS = ("bitbake", "openembedded-core", "meta-yocto", "meta-openembedded", "meta-raspberrypi")
COMMIT_LINE = re.compile(r"^\s*commit\s*:\s*(?P<value>.*?)\s*(?:#.*)?$")
QUOTED_SHA = re.compile(r'^(["\'])[0-9a-f]{40}\1$')


def load_kas():
    try:
        import yaml
        import jsonschema
        import kas
    except ImportError as e:
        print(f"check-kas: FAIL: {e} (install kas from PyPI; it brings PyYAML and jsonschema)")
        sys.exit(1)
    schema_path = os.path.join(os.path.dirname(kas.__file__), "schema-kas.json")
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    return yaml, jsonschema, schema, kas


_KAS_CONTEXT = []


def kas_merge(kas, files):
    """Load config files the way `kas build a.yml:b.yml` does (schema, header
    version and include checks included), without touching any repository."""
    import argparse
    import tempfile
    from kas import context, includehandler
    if not _KAS_CONTEXT:
        import atexit
        import shutil
        workdir = tempfile.mkdtemp(prefix="check-kas-")
        atexit.register(shutil.rmtree, workdir, True)
        os.environ["KAS_WORK_DIR"] = workdir
        context.create_global_context(argparse.Namespace(no_color=True, update=False, force_checkout=False))
        _KAS_CONTEXT.append(workdir)
    config, missing = includehandler.IncludeHandler(list(files), use_lock=False).get_config()
    if missing:
        raise ValueError(f"includes from repositories that are not available: {missing}")
    return config


def main():
    yaml, jsonschema, schema, kas = load_kas()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    compat = kas.__file_version__
    compat_min = kas.__compatible_file_version__
    print(f"check-kas: kas {kas.__version__} schema ({validator_cls.__name__}), "
          f"config format versions {compat_min}..{compat}")

    files = sorted(glob.glob(os.path.join(KAS_DIR, "**", "*.yml"), recursive=True))
    if not files:
        print("check-kas: FAIL: no kas files under yocto-layer/kas/")
        return 1

    problems = []
    parsed = {}
    for path in files:
        rel = os.path.relpath(path, REPO_ROOT)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            problems.append(f"{rel}: not valid YAML: {e}")
            continue
        parsed[path] = doc
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        for err in errors:
            where = "/".join(str(p) for p in err.path) or "(top level)"
            problems.append(f"{rel}: schema: {where}: {err.message}")
        version = (doc or {}).get("header", {}).get("version")
        if not isinstance(version, int) or (compat is not None and not compat_min <= version <= compat):
            problems.append(f"{rel}: header.version {version!r} is not supported by kas {kas.__version__}")

        # Every commit: is a quoted full SHA-1 (checked on the text: YAML would
        # silently accept unquoted or numeric-looking values).
        for lineno, line in enumerate(text.splitlines(), 1):
            m = COMMIT_LINE.match(line)
            if m and not QUOTED_SHA.match(m["value"]):
                problems.append(f"{rel}:{lineno}: commit must be a quoted 40-hex string, got {m['value']!r}")
        for name, repo in ((doc or {}).get("repos") or {}).items():
            if not isinstance(repo, dict) or not repo.get("url"):
                continue
            if not repo.get("branch"):
                problems.append(f"{rel}: repo {name}: pins no branch")
            commit = repo.get("commit")
            if not (isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}", commit)):
                problems.append(f"{rel}: repo {name}: commit {commit!r} is not a 40-hex SHA-1")
        for include in (doc or {}).get("header", {}).get("includes", []) or []:
            if isinstance(include, str) and not os.path.isfile(os.path.join(REPO_ROOT, include)):
                problems.append(f"{rel}: include {include!r} does not exist (includes are repo-relative)")
        print(f"check-kas: {rel}: parsed and validated")

    machines = [p for p, d in parsed.items() if isinstance(d, dict) and "machine" in d]
    if not machines:
        problems.append("no machine configuration (a file with `machine:`) found")
    addons = [p for p, d in parsed.items() if p not in machines and "include" not in os.path.relpath(p, KAS_DIR).split(os.sep)]
    for path in machines:
        rel = os.path.relpath(path, REPO_ROOT)
        try:
            merged = kas_merge(kas, [path])
        except Exception as e:  # kas reports config errors as exceptions
            problems.append(f"{rel}: kas could not load it: {type(e).__name__}: {e}")
            continue
        for addon in addons:
            try:
                kas_merge(kas, [path, addon])
            except Exception as e:
                problems.append(f"{rel}:{os.path.relpath(addon, REPO_ROOT)}: kas could not load it: {e}")
        machine = merged.get("machine")
        expected = os.path.splitext(os.path.basename(path))[0]
        if machine != expected:
            problems.append(f"{rel}: machine is {machine!r}, the file name says {expected!r}")
        if merged.get("distro") != "lookout":
            problems.append(f"{rel}: distro is {merged.get('distro')!r}, expected 'lookout'")
        target = merged.get("target")
        targets = [target] if isinstance(target, str) else list(target or [])
        if "lookout-image" not in targets:
            problems.append(f"{rel}: target {target!r} does not build lookout-image")
        repos = merged.get("repos") or {}
        for name in REQUIRED_REPOS:
            if name not in repos:
                problems.append(f"{rel}: repository {name} is not pinned")
        if "lookout" not in repos or "yocto-layer" not in ((repos.get("lookout") or {}).get("layers") or {}):
            problems.append(f"{rel}: the lookout repository's yocto-layer is not in the build")
        print(f"check-kas: {rel}: loaded by kas with its includes: machine {machine}, "
              f"{len(repos)} repositories, add-ons {', '.join(os.path.basename(a) for a in addons) or '-'}")

    if problems:
        for p in problems:
            print(f"check-kas: {p}")
        print(f"check-kas: FAIL: {len(problems)} problem(s)")
        return 1
    print(f"check-kas: PASS: {len(files)} kas files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
