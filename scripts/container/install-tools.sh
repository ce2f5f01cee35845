#!/usr/bin/env bash
# Install the host tools for daemonless OCI builds (buildah/podman + runc + debootstrap),
# only those that are missing. Idempotent; needs root (or sudo) and Debian's apt.
set -euo pipefail

# Debian package -> a file it installs (how we tell whether it is there).
declare -A PROBE=(
  [buildah]=/usr/bin/buildah
  [podman]=/usr/bin/podman
  [runc]=/usr/sbin/runc
  [debootstrap]=/usr/sbin/debootstrap
  [uidmap]=/usr/bin/newuidmap
  [slirp4netns]=/usr/bin/slirp4netns
  [containernetworking-plugins]=/usr/lib/cni/bridge
  [netavark]=/usr/lib/podman/netavark
  [aardvark-dns]=/usr/lib/podman/aardvark-dns
  [iptables]=/usr/sbin/iptables
)

missing=()
for pkg in "${!PROBE[@]}"; do
  [[ -e ${PROBE[$pkg]} ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  echo "container tools: all present"
  exit 0
fi

SUDO=()
if ((EUID != 0)); then
  command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi
command -v apt-get >/dev/null || { echo "apt-get not found; install manually: ${missing[*]}" >&2; exit 1; }

echo "container tools: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
APT=("${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
"${APT[@]}" update -qq
"${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "container tools: done"
