#!/usr/bin/env bash
# Installs the Debian packages the tests run for real: prometheus (promtool, SLO tests) and redis-server (shared cache).
# Skips whatever is already present, so it costs nothing after the first run.
set -euo pipefail

need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v redis-server >/dev/null || need+=(redis-server)
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
