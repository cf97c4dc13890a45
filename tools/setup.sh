#!/usr/bin/env bash
# Installs what EPX builds with, from Debian's packages, when missing
# (idempotent; needs root or sudo the first time). clang and its sanitizer
# and libFuzzer runtimes (libclang-rt-14-dev) build the fuzz targets
# (tools/fuzz.sh); everything else builds with gcc. python3-pytest and
# python3-torch (CPU) run the Python packages' tests (python/tests) with
# Debian's /usr/bin/python3; pip, wheel, setuptools and venv build and
# install the wheel (tools/build-wheel.sh). CUDA comes from
# /usr/local/cuda (nvcc 13), which the GPU-capable build machines carry.
set -euo pipefail

packages=(
  bazel-bootstrap bazel-rules-java
  libfabric-dev libfabric-bin rdma-core libibverbs-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev libboost-dev libboost-program-options-dev doctest-dev
  iproute2 clang-format
  clang libclang-rt-14-dev
  libssl-dev openssl
  prometheus-cpp-dev python3-yaml
  python3-pytest python3-torch python3-venv python3-pip python3-wheel python3-setuptools
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: /usr/local/cuda/bin/nvcc not found; the CUDA kernels need the CUDA toolkit (nvcc 13)" >&2
  exit 1
fi
