#!/usr/bin/env bash
# Installs the real corpus of `make bench` (bench/real_corpus.py): Debian's python3.11-doc, the Python 3.11
# documentation as HTML under /usr/share/doc/python3.11/html. Skips it when present.
set -euo pipefail

[ -f /usr/share/doc/python3.11/html/library/json.html ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  sudo=$(command -v sudo || true)
  [ -n "$sudo" ] || { echo "bench: need root (or sudo) to install python3.11-doc" >&2; exit 1; }
else
  sudo=""
fi
echo "bench: installing Debian's python3.11-doc (the real corpus)" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3.11-doc >/dev/null
