#!/usr/bin/env bash
# Builds the epxd image:
#   deploy/k8s/build-image.sh IMAGE        e.g. my-registry/epx/epxd:0.1.0
# then push IMAGE where the cluster pulls from. Uses docker (or podman via
# DOCKER=podman). On EFA hosts you may prefer the EFA installer's
# libfabric: see README "Deploying on EKS".
set -euo pipefail
cd "$(dirname "$0")/../.."
image=${1:?usage: build-image.sh IMAGE}
docker=${DOCKER:-docker}
bazel build -c opt //daemon:epxd //tools:epxctl
context=$(mktemp -d /tmp/epx-image-XXXXXX)
trap 'rm -rf "$context"' EXIT
install -m 0755 bazel-bin/daemon/epxd bazel-bin/tools/epxctl "$context/"
install -m 0644 deploy/k8s/Dockerfile deploy/k8s/epxd.conf "$context/"
"$docker" build -t "$image" "$context"
echo "built $image; push it, then: deploy/k8s/render.sh $image | kubectl apply -f -"
