#!/usr/bin/env bash
# Installs the Debian packages the tests and `make images` run for real: prometheus (promtool,
# SLO tests), redis-server (shared cache), the container tools that build and run the images
# (podman, buildah, skopeo, mmdebstrap, runc; uidmap and fuse-overlayfs for podman's storage;
# docker-registry, a registry on loopback the archives are pushed to), and the test node's
# runtime (containerd, the CNI plugins, iptables, and dnsmasq as its cluster DNS), and chromium, the
# browser the dashboard's tests drive through Playwright (which never downloads a browser of its own).
# Skips whatever is already present, so it costs nothing after the first run.
set -euo pipefail

# A command (or file) each package installs, so a present one is never reinstalled.
packages=(
  "promtool|prometheus"
  "redis-server|redis-server"
  "podman|podman"
  "buildah|buildah"
  "skopeo|skopeo"
  "mmdebstrap|mmdebstrap"
  "runc|runc"
  "newuidmap|uidmap"
  "fuse-overlayfs|fuse-overlayfs"
  "docker-registry|docker-registry"
  "containerd|containerd"
  "/usr/lib/cni/bridge|containernetworking-plugins"
  "iptables|iptables"
  "dnsmasq|dnsmasq-base"
  "/usr/bin/chromium|chromium"
)
need=()
for entry in "${packages[@]}"; do
  provided=${entry%%|*}
  command -v "$provided" >/dev/null || [ -e "$provided" ] || need+=("${entry##*|}")
done
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  sudo=$(command -v sudo || true)
  [ -n "$sudo" ] || { echo "tools: need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
else
  sudo=""
fi
echo "tools: installing Debian packages: ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
