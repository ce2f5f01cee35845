#!/usr/bin/env bash
# Point the manifests at an image: set-image.sh [REGISTRY/]NAME:TAG
# (what `kustomize edit set image iris_classifier=...` does, without needing kustomize).
# Sets it in this base and in the `tiers` overlay (its runner Deployment), the same image.
# Then: kubectl apply -k deploy/k8s/overlays/single (or .../tiers)
set -euo pipefail
image=${1:?usage: set-image.sh [REGISTRY/]NAME:TAG}
[[ $image == *:* && ${image##*:} != */* ]] || { echo "set-image.sh: $image has no :TAG" >&2; exit 1; }
name=${image%:*}
tag=${image##*:}
here="$(dirname "$0")"
for kustomization in "$here/kustomization.yaml" "$here/../overlays/tiers/kustomization.yaml"; do
  [ -f "$kustomization" ] || continue
  sed -i -E \
    -e "s|^(    newName: ).*|\1${name}|" \
    -e "s|^(    newTag: ).*|\1\"${tag}\"|" \
    "$kustomization"
done
echo "deploy/k8s: image ${name}:${tag}"
