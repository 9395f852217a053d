#!/bin/sh
# Prints the argocd-cm ConfigMap (a patch: only the health-check keys) that carries the Argo CD
# health checks of deploy/argocd/resource_customizations/, one
# resource.customizations.health.<group>_<Kind> key per kind. deploy/argocd/argocd-cm.yaml is
# its output and docs/gitops.md embeds the same keys; tests/argocd_health.rs fails when either
# differs from the .lua files. After changing a health.lua:
#   deploy/argocd/render-argocd-cm.sh > deploy/argocd/argocd-cm.yaml
# and paste the file into docs/gitops.md.
set -eu
cd "$(dirname "$0")"
cat <<'HEAD'
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
HEAD
for dir in resource_customizations/*/*/; do
  dir=${dir%/}
  kind=${dir##*/}
  group=${dir%/*}
  group=${group##*/}
  printf '  resource.customizations.health.%s_%s: |\n' "$group" "$kind"
  sed 's/^\(.\)/    \1/' "$dir/health.lua"
done
