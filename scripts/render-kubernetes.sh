#!/usr/bin/env bash
# The plain manifests in packaging/kubernetes/, for clusters that apply YAML rather than run
# Helm, rendered from the chart (packaging/helm/driftgate) with its defaults: the chart is their
# one source. tests/offline/package.rs checks that they are current.
#   scripts/render-kubernetes.sh [OUT_DIR]     (default packaging/kubernetes)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-packaging/kubernetes}"
helm="$(scripts/py-env.sh helm)/helm"
chart=packaging/helm/driftgate
render() { "$helm" template driftgate "$chart" --namespace driftgate "$@"; }
{
    cat <<'YAML'
# driftgate as a node agent DaemonSet, rendered from the Helm chart packaging/helm/driftgate by
# scripts/render-kubernetes.sh (do not edit here). Apply with: kubectl apply -f daemonset.yaml
# Prometheus Operator resources are in monitoring.yaml. The README's "Kubernetes" says more.
apiVersion: v1
kind: Namespace
metadata:
  name: driftgate
  labels:
    # The agents are privileged (fanotify on every container's filesystem needs CAP_SYS_ADMIN).
    pod-security.kubernetes.io/enforce: privileged
YAML
    render
} >"$out/daemonset.yaml"
{
    cat <<'YAML'
# Monitoring for the driftgate DaemonSet (daemonset.yaml), for the Prometheus Operator: a
# ServiceMonitor over the agents' metrics Service, and alert rules. Rendered from the Helm chart
# packaging/helm/driftgate by scripts/render-kubernetes.sh (do not edit here).
YAML
    render --set serviceMonitor.enabled=true,prometheusRule.enabled=true \
        --show-only templates/servicemonitor.yaml --show-only templates/prometheusrule.yaml
} >"$out/monitoring.yaml"
