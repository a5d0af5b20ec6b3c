#!/usr/bin/env bash
# The reliability suite in its long form, against a release build: 100,000 exec attempts per
# writer pace in the check-then-exec race, a 30 s flood of blocked execs, 1,000 containers, and
# every fault case of tests/reliability/ that needs no debug-build fault hook. Prints the
# figures the README quotes. Needs root; takes about 10 minutes.
#
#   scripts/torture.sh                 # everything
#   scripts/torture.sh race flood      # only the tests whose names contain these words
#
# The CI-sized forms of the same tests (and those that need fault hooks: a deadlocked decision
# thread, slow storage) run in `scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "torture.sh: needs root (fanotify permission events, overlay mounts)" >&2
    exit 1
fi
scripts/test-deps.sh >/dev/null
export DRIFTGATE_RACE_N="${DRIFTGATE_RACE_N:-100000}"
export DRIFTGATE_FLOOD_SECS="${DRIFTGATE_FLOOD_SECS:-30}"
export DRIFTGATE_CONTAINERS="${DRIFTGATE_CONTAINERS:-1000}"
log="$(mktemp /tmp/driftgate-torture.XXXXXX)"
filters=("$@")
# Fault hooks (a deadlocked decision thread, slow storage) exist in debug builds only.
skip=(--skip deadlocked --skip concurrent_execs --skip hostile_names)
cargo test --release --test reliability -- --test-threads=1 --nocapture "${skip[@]}" "${filters[@]}" 2>&1 | tee "$log"
echo
echo "== figures (release build, $(nproc) CPUs, kernel $(uname -r)) =="
grep -oE '(race, writer|exec flood|SIGKILL mid-flood|SIGSTOP|[0-9]+ containers:|journald stopped|8 GiB sparse|[0-9]+ of 40 containers).*' "$log" | cut -c1-240 || true
echo "(full log: $log)"
