#!/usr/bin/env bash
# Point the manifests at an image: set-image.sh [REGISTRY/]NAME:TAG
# (what `kustomize edit set image iris_classifier=...` does, without needing kustomize).
# Then: kubectl apply -k deploy/k8s
set -euo pipefail
image=${1:?usage: set-image.sh [REGISTRY/]NAME:TAG}
[[ $image == *:* && ${image##*:} != */* ]] || { echo "set-image.sh: $image has no :TAG" >&2; exit 1; }
name=${image%:*}
tag=${image##*:}
kustomization="$(dirname "$0")/kustomization.yaml"
sed -i -E \
  -e "s|^(    newName: ).*|\1${name}|" \
  -e "s|^(    newTag: ).*|\1\"${tag}\"|" \
  "$kustomization"
echo "deploy/k8s: image ${name}:${tag}"
