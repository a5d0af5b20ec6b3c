#!/usr/bin/env bash
# The whole test suite: installs its dependencies, checks formatting and lints, then runs unit,
# CLI, privileged (real fanotify + overlay), benchmark-harness, runtime (containerd, Docker,
# Podman), operations, reliability, systemd, kernel-layer (BPF LSM, in a VM) and packaging tests,
# then fuzzes every parser of untrusted bytes briefly.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
cargo fmt --check
# The kernel layer's BPF program: the committed object is what its source compiles to.
scripts/build-bpf.sh --check
cargo clippy --all-targets -- -D warnings
# Module docs are part of the architecture (the path of one event): keep their links valid.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet
# The measurement harnesses (exec_latency, first_exec_race) take minutes and are run by hand
# (README, "Performance"): here they are only compiled. The criterion micro-benchmarks run once
# each in test mode.
cargo test --benches --no-run
cargo test --bench hot_path
cargo test --lib --bins --tests "$@"
# Every parser of untrusted bytes, fuzzed for 20 s each (longer: scripts/fuzz.sh SECONDS).
if [ $# -eq 0 ]; then
    scripts/fuzz.sh 20
fi
