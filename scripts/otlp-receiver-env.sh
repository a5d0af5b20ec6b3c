#!/usr/bin/env bash
# A Python environment with the OpenTelemetry project's own OTLP definitions (PyPI
# opentelemetry-proto) and gRPC (grpcio), for the OTLP receiver the tests send findings to
# (tests/tools/otlp_receiver.py): an implementation of the protocol that is not driftgate's.
# Made once, cached under target/ (CI's time is bounded).
#   scripts/otlp-receiver-env.sh [DIR]     prints the environment's python when it is ready
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/otlp-receiver-env}"
want="opentelemetry-proto==1.29.0 protobuf==5.29.3 grpcio==1.68.1"
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [ -x "$dir/bin/python3" ] && [ "$(cat "$dir/.driftgate-env" 2>/dev/null)" = "$want" ]; then
    echo "$dir/bin/python3"
    exit 0
fi
rm -rf "$dir"
python3 -m venv "$dir" >&2
# shellcheck disable=SC2086
"$dir/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: $want >&2
echo "$want" >"$dir/.driftgate-env"
echo "$dir/bin/python3"
