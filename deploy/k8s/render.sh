#!/usr/bin/env bash
# Renders the Kubernetes manifests for epxd to stdout:
#   deploy/k8s/render.sh IMAGE [NAMESPACE] > epx.yaml && kubectl apply -f epx.yaml
# IMAGE: the image deploy/k8s/build-image.sh built and you pushed; NAMESPACE
# defaults to epx. The ConfigMap epxd-config holds deploy/k8s/epxd.conf.
set -euo pipefail
here=$(dirname "$0")
image=${1:?usage: render.sh IMAGE [NAMESPACE]}
namespace=${2:-epx}
[[ $namespace =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || { echo "render.sh: bad namespace '$namespace'" >&2; exit 2; }
[[ $image != *[[:space:]@]* || $image == *@sha256:* ]] || { echo "render.sh: bad image '$image'" >&2; exit 2; }

cat <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: epxd-config
  namespace: $namespace
data:
  epxd.conf: |
YAML
sed 's/^/    /' "$here/epxd.conf"
echo "---"
sed -e "s|@NAMESPACE@|$namespace|g" -e "s|@IMAGE@|$image|g" "$here/daemonset.yaml"
