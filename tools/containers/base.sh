#!/usr/bin/env bash
# Bootstraps the two Debian base images the ragops images build on where no registry serves
# base images (the Dockerfiles default to the public python:*-slim image elsewhere), and prints
# their references as BUILD_BASE=... and BASE=... lines.
#
#   build base   Debian minbase with python3, python3-venv and ca-certificates: the builder
#                stage, where uv installs the lock into /opt/ragops.
#   python base  only Python 3.11's interpreter, its standard library and the shared libraries
#                they and the wheels in the lock link against, unpacked from the same Debian
#                packages (mmdebstrap's extract variant): no shell, no package manager, no
#                compiler. Numeric non-root user 65532 ("nonroot"), the CA bundle of the build
#                base, the standard library compiled to bytecode (a read-only root filesystem
#                cannot cache it), and a dpkg status file listing every package, so that image
#                scanners see what is inside.
#
# The venv's interpreter is a symlink into the base, so both bases carry the same python3.11
# package version (the python base pins the version the build base got).
#
# Keyed by the hash of this file: an image of that key in podman's storage is reused; a changed
# recipe makes new ones. RAGOPS_BASE_REFRESH=1 rebuilds them anyway (Debian security updates).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
suite=bookworm
mirror=${RAGOPS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
key=$(sha256sum "$0" | cut -c1-12)
build_ref="localhost/ragops-build-base:$suite-$key"
python_ref="localhost/ragops-python-base:$suite-$key"

if [ "${RAGOPS_BASE_REFRESH:-0}" != 1 ] && podman image exists "$build_ref" && podman image exists "$python_ref"; then
  echo "BUILD_BASE=$build_ref"
  echo "BASE=$python_ref"
  exit 0
fi

work=$(mktemp -d /var/tmp/ragops-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Documentation and translations are left out of both; copyright files stay.
slim=(
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
)
base_config=(
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  --change 'ENV LANG=C.UTF-8'
  --change 'CMD ["python3.11"]'
)

quietly() { # runs a chatty command with its output in a log, shown only when it fails
  "$@" >"$work/log" 2>&1 || { cat "$work/log" >&2; echo "images: failed: $*" >&2; return 1; }
}

start=$SECONDS
echo "images: bootstrapping the build base ($suite minbase + python3-venv)" >&2
quietly mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates "${slim[@]}" \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
  "$suite" "$work/build.tar" "$mirror"
python_version=$(tar -xOf "$work/build.tar" ./var/lib/dpkg/status |
  awk '$0 == "Package: python3.11-minimal" {found = 1} found && /^Version: / {print $2; exit}')
[ -n "$python_version" ] || { echo "images: no python3.11-minimal in the build base" >&2; exit 1; }

echo "images: bootstrapping the python base (python3.11 $python_version, no shell)" >&2
rootfs="$work/python"
# readline-common depends on "dpkg | install-info": install-info is the small one.
quietly mmdebstrap --variant=extract --skip=cleanup/apt/cache "${slim[@]}" \
  --include="python3.11-minimal=$python_version,libpython3.11-stdlib=$python_version,libstdc++6,libgcc-s1,install-info" \
  "$suite" "$rootfs" "$mirror"
# The extract variant runs no maintainer scripts and records nothing: write the status file a
# scanner reads (each package's control fields, as installed), then drop the downloads.
status="$rootfs/var/lib/dpkg/status"
: >"$status"
for deb in "$rootfs"/var/cache/apt/archives/*.deb; do
  dpkg-deb --field "$deb" | awk 'NR == 1 {print; print "Status: install ok installed"; next} {print}' >>"$status"
  echo >>"$status"
done
rm -rf "$rootfs"/var/cache/apt "$rootfs"/var/lib/apt "$rootfs"/var/log/* "$rootfs"/etc/apt
# What python3.11-minimal's postinst would have done: the standard library as bytecode.
chroot "$rootfs" /usr/bin/python3.11 -m compileall -q /usr/lib/python3.11 >/dev/null
install -d "$rootfs/etc/ssl/certs"
tar -xOf "$work/build.tar" ./etc/ssl/certs/ca-certificates.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"
printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin' \
  >"$rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$rootfs/etc/group"
install -d -m 0755 -o 65532 -g 65532 "$rootfs/home/nonroot"
install -d -m 0700 "$rootfs/root"
chmod 1777 "$rootfs/tmp"

podman import --quiet "${base_config[@]}" "$work/build.tar" "$build_ref" >/dev/null
tar -C "$rootfs" --numeric-owner -cf - . | podman import --quiet "${base_config[@]}" - "$python_ref" >/dev/null
# The interpreter starts and every extension module of the standard library loads.
podman run --rm --network=none --read-only --user=65532:65532 "$python_ref" python3.11 -c '
import bz2, ctypes, decimal, hashlib, lzma, readline, sqlite3, ssl, uuid, zlib
ssl.create_default_context().load_verify_locations("/etc/ssl/certs/ca-certificates.crt")
'
echo "images: bases ready in $((SECONDS - start)) s" >&2
echo "BUILD_BASE=$build_ref"
echo "BASE=$python_ref"
