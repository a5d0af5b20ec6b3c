#!/usr/bin/env bash
# The whole test suite: installs its dependencies, checks formatting and lints, then runs unit,
# CLI, privileged (real fanotify + overlay), benchmark-harness, runtime (containerd, Docker,
# Podman), operations, systemd and packaging tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# The measurement harnesses (exec_latency, first_exec_race) take minutes and are run by hand
# (README, "Performance"): here they are only compiled. The criterion micro-benchmarks run once
# each in test mode.
cargo test --benches --no-run
cargo test --bench hot_path
cargo test --lib --bins --tests "$@"
