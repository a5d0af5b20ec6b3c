#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes (cargo-fuzz, libFuzzer, AddressSanitizer), each for
# SECONDS (default 25), starting from seeds written by `fuzz/src/bin/make-seeds.rs` (the formats
# the test suite uses). Fails on the first crash and leaves the reproducer in
# fuzz/artifacts/<target>/; reproduce with `cargo +nightly fuzz run <target> <file>`.
#
#   scripts/fuzz.sh            # every target, 25 s each
#   scripts/fuzz.sh 600        # longer
#   scripts/fuzz.sh 60 proc    # one target
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-25}"
shift || true
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs a nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list | grep -vx make-seeds)
fi
(cd fuzz && cargo +nightly run -q --bin make-seeds)
cargo +nightly fuzz build
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${secs}s"
    # -rss_limit_mb: the parsers must stay bounded on any input; -timeout: and fast.
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 2>&1 |
        grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|.*(panicked|Crash|crash-|timeout-|oom-|leak-))' || true
    if compgen -G "fuzz/artifacts/$t/*" >/dev/null; then
        echo "fuzz.sh: $t found a failing input: $(ls fuzz/artifacts/$t/)" >&2
        exit 1
    fi
done
echo "fuzz.sh: ${#targets[@]} targets, ${secs}s each, no failure"
