#!/usr/bin/env bash
# `make images`: builds the operator and runtime images with podman from docker/*.Dockerfile and
# exports each as an OCI archive under dist/images/ (`skopeo copy oci-archive:... docker://...`
# pushes it anywhere). Installs what it needs on a fresh Debian machine (tools/system-packages.sh)
# and bootstraps its base images from Debian packages (tools/containers/base.sh) unless BASE and
# BUILD_BASE name others (e.g. python:3.11.14-slim-bookworm on a machine that can pull it).
#
# Rebuilds only what changed: each image carries the hash of its inputs (the build context, the
# Dockerfiles, the bases and the git revision) in the label dev.ragops.build-inputs; an image
# whose label matches is kept, and podman's layer cache makes a source-only change a seconds-long
# rebuild. The test tier (tests/support/podman.py) runs this same script.
#
# Prints one line per image, "<name> <reference> <archive>", and reports each image's size on
# stderr: uncompressed (as `podman images` counts it) and gzip-compressed (its layers in the
# archive: what a registry stores and a node pulls).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/tools/containers/containers.conf}"
registry=${RAGOPS_IMAGE_REGISTRY:-ghcr.io/ragops}
dist=${RAGOPS_IMAGES_DIR:-$root/dist/images}

bash "$root/tools/system-packages.sh"
if [ -z "${BASE:-}" ] || [ -z "${BUILD_BASE:-}" ]; then
  eval "$(bash "$root/tools/containers/base.sh")"
fi

version=$(awk -F'"' '/^version = / {print $2; exit}' "$root/pyproject.toml")
context=(pyproject.toml uv.lock README.md .dockerignore docker operator/ragops_operator runtime/ragops_runtime)
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain -- "${context[@]}" 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi
inputs=$(
  cd "$root"
  git ls-files --cached --others --exclude-standard -- "${context[@]}" | grep -v -e '__pycache__' -e '\.pyc$' |
    sort | while read -r file; do [ -f "$file" ] && sha256sum "$file"; done
  echo "$BUILD_BASE $BASE $version $revision"
)
inputs=$(sha256sum <<<"$inputs" | cut -c1-16)

# The build reaches the package index with the host's CA bundle (a TLS-inspecting proxy's CA
# included) mounted for its RUN steps only; it is never copied into a layer.
ca_bundle=/etc/ssl/certs/ca-certificates.crt
mounts=()
[ -f "$ca_bundle" ] && mounts=(--volume "$ca_bundle:$ca_bundle:ro")

mkdir -p "$dist"
for name in runtime operator; do
  case $name in
    runtime) ref="$registry/ragops:$version" ;;
    operator) ref="$registry/ragops-operator:$version" ;;
  esac
  archive="$dist/${ref##*/}"
  archive="${archive/:/-}.oci.tar"
  current=$(podman image inspect --format '{{index .Labels "dev.ragops.build-inputs"}}' "$ref" 2>/dev/null || true)
  if [ "$current" != "$inputs" ]; then
    previous=$(podman image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)
    echo "images: building $ref" >&2
    start=$SECONDS
    log="$dist/$name.build.log"
    # The OCI format, the standard one, has no HEALTHCHECK: podman warns and drops it (a
    # `docker build` keeps it; Kubernetes uses the chart's probes either way).
    if ! podman build --pull=never --network=host --layers "${mounts[@]}" \
      --build-arg "BUILD_BASE=$BUILD_BASE" --build-arg "BASE=$BASE" \
      --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
      --label "dev.ragops.build-inputs=$inputs" \
      --file "$root/docker/$name.Dockerfile" --tag "$ref" "$root" >"$log" 2>&1; then
      tail -40 "$log" >&2
      echo "images: building $ref failed (the whole log: $log)" >&2
      exit 1
    fi
    echo "images: built $ref in $((SECONDS - start)) s" >&2
    # The image this one replaced, now untagged: gone, unless a container or a newer tag holds it.
    if [ -n "$previous" ]; then
      podman rmi "$previous" >/dev/null 2>&1 || true
    fi
  fi
  if [ "$(cat "$archive.inputs" 2>/dev/null)" != "$inputs" ] || [ ! -f "$archive" ]; then
    rm -f "$archive" "$archive.inputs"
    podman save --quiet --format oci-archive --output "$archive" "$ref"
    echo "$inputs" >"$archive.inputs"
  fi
  size=$(podman image inspect --format '{{.Size}}' "$ref")
  compressed=$(skopeo inspect --raw "oci-archive:$archive" | python3 -c \
    'import json, sys; print(sum(layer["size"] for layer in json.load(sys.stdin)["layers"]))')
  echo "images: $ref: $(numfmt --to=si --suffix=B "$size") uncompressed, $(numfmt --to=si --suffix=B "$compressed")" \
    "compressed; revision $revision; $archive" >&2
  echo "$name $ref $archive"
done
