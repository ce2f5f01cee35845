#!/usr/bin/env bash
# Build the local base image for daemonless Bento builds: Debian bookworm (minbase) with
# Python 3.11 and pip, Debian's own CA certificates, PIP_BREAK_SYSTEM_PACKAGES=1.
# The build host's extra CA certificates (e.g. a TLS-inspecting egress proxy) are NOT baked in:
# tools/containers.py mounts the host's bundle read-only during the build steps only.
# Needed because no container registry (Docker Hub) is reachable on our machines.
#
#   make-base-image.sh IMAGE_TAG        e.g. localhost/iris-base:bookworm-py311-1a2b3c4d
#
# Uses podman with whatever CONTAINERS_CONF / CONTAINERS_STORAGE_CONF the caller exported.
# Does nothing when IMAGE_TAG already exists in that store. Needs root (debootstrap).
set -euo pipefail

IMAGE=${1:?usage: make-base-image.sh IMAGE_TAG}
SUITE=${BASE_SUITE:-bookworm}

if podman image exists "$IMAGE"; then
  echo "base image: $IMAGE already in the local store"
  exit 0
fi

# The Debian archive this machine's own apt uses (deb822 .sources or one-line .list).
mirror() {
  local uri
  uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' |
    grep -E '/debian/?$' | head -n1 || true)
  [[ -n $uri ]] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR=${DEBIAN_MIRROR:-$(mirror)}

work=$(mktemp -d "${TMPDIR:-/tmp}/iris-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

echo "base image: debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates,bash \
  "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" "$rootfs/debootstrap/debootstrap.log" 2>/dev/null >&2
  exit 1
}

chroot "$rootfs" update-ca-certificates >/dev/null

python=$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ $python == 3.11 ]] || { echo "base image: expected Python 3.11, got $python" >&2; exit 1; }

# Trim what a server image never uses.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/locale/* "$rootfs"/var/log/* "$rootfs"/debootstrap

echo "base image: importing as $IMAGE"
tar --numeric-owner -C "$rootfs" -c . | podman import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
  --change 'ENV PIP_NO_CACHE_DIR=1' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["/bin/bash"]' \
  - "$IMAGE" >/dev/null 2>&1
echo "base image: $IMAGE ready"
