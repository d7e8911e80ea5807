#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 20), one after
# the other, on the stable toolchain (RUSTC_BOOTSTRAP=1, no sanitizer: the
# parsers are safe Rust). Installs cargo-fuzz when it is missing. A crash
# fails the script and is saved in fuzz/artifacts/<target>/.
#   bash scripts/fuzz.sh [SECONDS]
# Long runs: see docs/security.md ("Parsers and fuzzing").
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-20}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target" "seeds/$target"
    echo "fuzz: $target for ${seconds} s"
    # New inputs go to corpus/ (not committed); seeds/ is read as well.
    log="$(mktemp)"
    if ! cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz: $target FAILED; the input is saved in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$log" || true
    rm -f "$log"
done
