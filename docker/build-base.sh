#!/usr/bin/env bash
# Build a registry-free Python base image from Debian packages and load it into Docker.
#
#   docker/build-base.sh [TAG]          (default TAG: skserve-base:bookworm)
#
# For machines that cannot pull python:3.12-slim: mmdebstrap assembles a minimal Debian
# root file system (python3, python3-venv, ca-certificates) from the Debian archive into a
# tar, and `docker import` turns it into an image, the way official Debian images are made.
# Needs root (or mmdebstrap's unshare mode) and the `mmdebstrap` package.
# Environment: SUITE (default bookworm, Python 3.11), DEBIAN_MIRROR, SOURCE_DATE_EPOCH
# (same value and same archive state give a bit-identical tar).
set -euo pipefail

tag="${1:-skserve-base:bookworm}"
suite="${SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

command -v mmdebstrap >/dev/null || { echo "build-base.sh: mmdebstrap not found (apt-get install mmdebstrap)" >&2; exit 1; }

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

# merged-usr hook: a merged /usr without the usrmerge package, which pulls in ~50 MB of perl.
# path-exclude: no man pages, docs or translations (copyright files are kept).
# customize-hook: drop apt lists and the files Docker provides itself.
mmdebstrap \
    --variant=apt \
    --include=python3,python3-venv,ca-certificates \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/etc/resolv.conf "$1"/etc/hostname' \
    "$suite" "$workdir/rootfs.tar" \
    "deb $mirror $suite main" \
    "deb $mirror $suite-updates main" \
    "deb $security_mirror $suite-security main"

docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "Debian $suite + python3 via mmdebstrap (docker/build-base.sh)" \
    "$workdir/rootfs.tar" "$tag" >/dev/null

echo "built $tag ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
