#!/usr/bin/env bash
# Builds the pinned test tools (Kubernetes control plane and kubelet, etcd, kwok, helm,
# kubeconform, the test node's pause binary, a minimal OpenTelemetry Collector) from the Go modules under tools/ into .tools/bin/.
#
# Each binary is keyed by the hash of the go.mod/go.sum that pins it plus the Go version.
# Built binaries are kept in a per-user cache (RAGOPS_TOOLS_CACHE) under that key, so a
# fresh clone on a machine that built them once links them in seconds instead of
# recompiling Kubernetes; a changed pin gets a new key and is rebuilt.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.tools/bin"
cache="${RAGOPS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ragops-tools}"
mkdir -p "$bin" "$cache"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
if ! command -v go >/dev/null; then
  echo "tools: the Go toolchain (1.26 or newer) is needed to build the test control plane" >&2
  exit 1
fi

pinned_version() { # module dir, module path -> version from go.mod
  awk -v m="$2" '$1 == m && $2 ~ /^v/ {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$root/tools/$1/go.mod"
}

k8s_version=$(pinned_version k8s k8s.io/kubernetes)
k8s_minor=$(echo "$k8s_version" | cut -d. -f2)
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
helm_version=$(pinned_version helm helm.sh/helm/v3)
kwok_version=$(pinned_version kwok sigs.k8s.io/kwok)
kubeconform_version=$(pinned_version kubeconform github.com/yannh/kubeconform)

# name | module dir | package | ldflags
targets=(
  "kube-apiserver|k8s|k8s.io/kubernetes/cmd/kube-apiserver|$k8s_ldflags"
  "kube-controller-manager|k8s|k8s.io/kubernetes/cmd/kube-controller-manager|$k8s_ldflags"
  "kube-scheduler|k8s|k8s.io/kubernetes/cmd/kube-scheduler|$k8s_ldflags"
  "kubectl|k8s|k8s.io/kubernetes/cmd/kubectl|$k8s_ldflags"
  "kubelet|k8s|k8s.io/kubernetes/cmd/kubelet|$k8s_ldflags"
  "pause|pause|ragops.dev/tools/pause|"
  "etcd|etcd|ragops.dev/tools/etcd|"
  "kwok|kwok|sigs.k8s.io/kwok/cmd/kwok|-X sigs.k8s.io/kwok/pkg/consts.Version=$kwok_version"
  "helm|helm|helm.sh/helm/v3/cmd/helm|-X helm.sh/helm/v3/internal/version.version=$helm_version"
  "kubeconform|kubeconform|github.com/yannh/kubeconform/cmd/kubeconform|-X main.version=$kubeconform_version"
  # otlp receiver + file/debug exporters only: about 6 min on 2 busy cores, where the contrib distribution takes far longer.
  "otelcol|otelcol|ragops.dev/tools/otelcol|"
)

go_version=$(go env GOVERSION)
for target in "${targets[@]}"; do
  IFS='|' read -r name dir pkg ldflags <<<"$target"
  key=$({ find "$root/tools/$dir" -maxdepth 1 -type f \( -name 'go.*' -o -name '*.go' \) | sort | xargs cat
          echo "$go_version $pkg $ldflags"; } | sha256sum | cut -c1-16)
  cached="$cache/$name-$key"
  if [ ! -x "$cached" ]; then
    echo "tools: building $name ($pkg)" >&2
    start=$SECONDS
    (cd "$root/tools/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$cached.tmp" "$pkg")
    mv "$cached.tmp" "$cached"
    echo "tools: built $name in $((SECONDS - start))s" >&2
  fi
  ln -sf "$cached" "$bin/$name"
done

# kwok v0.8 applies no behaviour unless given Stage objects. Its own default stages ship
# in the pinned module; assemble the ones the tests rely on: nodes turn Ready and keep a
# lease heartbeat; pods turn Ready; deleted pods go away.
#
# Job pods are not kwok's: the tests' process-backed kubelet (tests/support/kubelet.py) runs
# them as local processes and reports their real exit codes. Were kwok to complete them, a
# test would see a "successful" build that never ran. So every pod stage except pod-delete
# gets one more selector term, "has no Job-name label" (the Job controller sets that label on
# every pod it creates; the kubelet harness selects exactly the pods that carry it).
# pod-delete keeps applying to every pod: with no kubelet to confirm termination, a deleted
# Job pod would otherwise stay Terminating forever.
kwok_dir=$(cd "$root/tools/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
stages="$root/.tools/kwok/stages.yaml"
mkdir -p "$(dirname "$stages")"

without_job_pods() { # stage file -> the same stage, selecting only pods no Job owns
  # The pinned stages put the selector's expressions at this exact indentation; fail loudly
  # rather than emit a stage that still completes Job pods if a new pin changes the layout.
  awk -v file="$1" '
    { print }
    /^    matchExpressions:$/ && !done {
      print "    - key: '\''.metadata.labels[\"batch.kubernetes.io/job-name\"]'\''"
      print "      operator: '\''DoesNotExist'\''"
      done = 1
    }
    END { if (!done) { print "tools: no spec.selector.matchExpressions in " file > "/dev/stderr"; exit 1 } }
  ' "$1"
}

: >"$stages.tmp"
for group in node/fast node/heartbeat-with-lease pod/fast; do
  for file in "$kwok_dir/kustomize/stage/$group"/*.yaml; do
    name=$(basename "$file" .yaml)
    [ "$name" = kustomization ] && continue
    echo "---" >>"$stages.tmp"
    if [[ $group == pod/* && $name != pod-delete ]]; then
      without_job_pods "$file" >>"$stages.tmp"
    else
      cat "$file" >>"$stages.tmp"
    fi
  done
done
mv "$stages.tmp" "$stages"
echo "tools: kwok stages in $stages" >&2
echo "tools: ready in $bin" >&2
