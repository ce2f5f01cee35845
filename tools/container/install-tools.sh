#!/usr/bin/env bash
# Host tools for daemonless OCI builds: buildah builds, podman runs, runc is the OCI runtime
# (crun fails on this kernel's hybrid cgroups), debootstrap makes the local base image; the
# rest is container networking. Installs only what is missing (apt; root or sudo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec bash "$here/../ensure-debian-packages.sh" \
  buildah podman runc debootstrap uidmap slirp4netns containernetworking-plugins \
  netavark aardvark-dns iptables
