#!/usr/bin/env bash
# Builds the GPU tests and benchmarks optimised and statically linked
# (internal libraries), and packs them with their Debian libraries into
# .device-pack/ for tools/device/run.sh on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
targets=(//daemon:epxd //tools:epxctl //tools:epx_bench //tools/device:gpu_bench //tests:gpu_path_test
         //tests:gpu_device_window_test //kernels:fp8_cast_gpu_test)
bazel build -c opt --dynamic_mode=off "${targets[@]}"
rm -rf .device-pack
exclude=$(git rev-parse --git-path info/exclude)
grep -qxF "/.device-pack/" "$exclude" 2>/dev/null || echo "/.device-pack/" >>"$exclude"
../shared/tools/pack-for-device.sh .device-pack bazel-bin/daemon/epxd bazel-bin/tools/epxctl bazel-bin/tools/epx_bench \
  bazel-bin/tools/device/gpu_bench bazel-bin/tests/gpu_path_test bazel-bin/tests/gpu_device_window_test \
  bazel-bin/kernels/fp8_cast_gpu_test
