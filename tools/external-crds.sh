#!/usr/bin/env bash
# Copies the CustomResourceDefinitions of other projects that the tests validate against into
# .tools/crds/: Prometheus Operator's ServiceMonitor and PrometheusRule (the chart renders both,
# the operator renders ServiceMonitors) and Argo CD's Application (an example ships one).
#
# No test may reach the internet, and kubeconform cannot fetch schemas offline, so the CRDs come
# from pinned Go modules through the Go module proxy, like the tools of tools/build.sh: a pin is
# a version the proxy checksums (go.sum database), and Go's module cache makes a second run a
# copy of a few files. A changed pin is a changed file here, nothing else.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.tools/crds"

prometheus_operator="github.com/prometheus-operator/prometheus-operator@v0.85.0"
argo_cd="github.com/argoproj/argo-cd/v3@v3.1.9"

# module@version | file inside the module (copied under its own base name)
files=(
  "$prometheus_operator|example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"
  "$prometheus_operator|example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"
  "$argo_cd|manifests/crds/application-crd.yaml"
)

export GOTOOLCHAIN=local GOFLAGS=-mod=mod
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
if ! command -v go >/dev/null; then
  echo "external-crds: the Go toolchain is needed to fetch the pinned CRDs" >&2
  exit 1
fi

module_dir() { # module@version -> its directory in Go's module cache (downloaded if needed)
  # Outside any module, so no go.mod of this repository constrains or records the download.
  (cd / && go mod download -json "$1") | awk -F'"' '$2 == "Dir" {print $4; exit}'
}

mkdir -p "$out"
declare -A dirs=()
for entry in "${files[@]}"; do
  IFS='|' read -r module path <<<"$entry"
  if [ -z "${dirs[$module]:-}" ]; then
    dirs[$module]=$(module_dir "$module")
    [ -n "${dirs[$module]}" ] || { echo "external-crds: could not download $module" >&2; exit 1; }
  fi
  source="${dirs[$module]}/$path"
  [ -f "$source" ] || { echo "external-crds: $module has no $path" >&2; exit 1; }
  # The module cache is read-only; a plain copy of it is writable and replaceable on the next run.
  install -m 0644 "$source" "$out/$(basename "$path")"
done
echo "tools: external CRDs in $out" >&2
