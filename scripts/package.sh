#!/usr/bin/env bash
# Builds the packages: target/debian/driftgate_*.deb (cargo-deb) and
# target/generate-rpm/driftgate-*.rpm (cargo-generate-rpm), with the binary, the systemd unit,
# the commented default config, man pages and shell completions.
#   scripts/package.sh [deb|rpm|all] [--profile release|dev]
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
profile="release"
if [ "${2:-}" = "--profile" ]; then profile="${3:-release}"; fi
dir=release
[ "$profile" = "dev" ] && dir=debug
cargo build --profile "$profile" --bin driftgate
rm -rf target/assets
"target/$dir/driftgate" generate-assets --out target/assets >/dev/null
gzip -9n target/assets/man/*.8
if [ "$what" = deb ] || [ "$what" = all ]; then
    # A dev build (the test suites') is large: compress it fast.
    fast=()
    [ "$profile" = dev ] && fast=(--fast)
    cargo deb --no-build --profile "$profile" --no-strip "${fast[@]}"
fi
if [ "$what" = rpm ] || [ "$what" = all ]; then
    cargo generate-rpm --profile "$profile"
fi
