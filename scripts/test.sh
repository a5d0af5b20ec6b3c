#!/usr/bin/env bash
# The whole test suite: installs its dependencies, checks formatting and lints, then runs unit,
# CLI, privileged (real fanotify + overlay) and runtime (containerd) tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets "$@"
