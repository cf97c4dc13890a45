#!/usr/bin/env bash
# Builds the GPU tests and benchmarks optimised and statically linked
# (internal libraries), and packs them with their Debian libraries into
# .device-pack/ for tools/device/run.sh on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
targets=(//daemon:epxd //tools:epxctl //tools:epx_exchange //tools:epx_bench //tools/bench:epx_noisy_bench //tools/device:gpu_bench
         //tests:gpu_path_test //tests:gpu_device_window_test //kernels:fp8_cast_gpu_test
         //kernels:low_latency_gpu_test //tools/device:ll_rank //tests:low_latency_job_test //tools/device:ll_bench
         //tools/device:normal_rank //tests:normal_job_test //python/native:libepx_c.so
         //tools/bench:fabric_exchange_peer)
bazel build -c opt --dynamic_mode=off "${targets[@]}"
# Not the bazel-bin symlink: another build in this workspace (other flags)
# may have re-pointed it since.
bin=$(bazel info -c opt --dynamic_mode=off bazel-bin)
rm -rf .device-pack  # ignored by .gitignore; carried to the GPU machine explicitly
# iproute2's ip goes too: the GPU machine's image has none, and
# rails_bench makes its "hosts" with ip netns (tools/setup.sh installs it here).
command -v ip >/dev/null || { echo "pack: no ip (iproute2) on this machine: tools/setup.sh installs it" >&2; exit 1; }
../shared/tools/pack-for-device.sh .device-pack $bin/daemon/epxd $bin/tools/epxctl $bin/tools/epx_exchange $bin/tools/epx_bench \
  $bin/tools/bench/epx_noisy_bench $bin/tools/device/gpu_bench $bin/tests/gpu_path_test $bin/tests/gpu_device_window_test \
  $bin/kernels/fp8_cast_gpu_test $bin/kernels/low_latency_gpu_test $bin/tools/device/ll_rank \
  $bin/tests/low_latency_job_test $bin/tools/device/ll_bench $bin/tools/device/normal_rank $bin/tests/normal_job_test \
  $bin/tools/bench/fabric_exchange_peer \
  $bin/python/native/libepx_c.so "$(command -v ip)"
# The Python wheel around the same libepx_c.so: the GPU machine's python
# (another version, another torch) installs it as a user would.
EPX_LIBRARY=$(realpath .device-pack/bin/libepx_c.so) tools/build-wheel.sh .device-pack/wheel
# DeepEP's source (../shared/anchors/deepep), for deepep_same_gpu.sh to build
# and run beside EPX on the GPU machine; never part of this repository.
if [[ -f ../shared/anchors/deepep/deepep-567632d.tar.gz ]]; then
  mkdir -p .device-pack/deepep && cp ../shared/anchors/deepep/deepep-567632d.tar.gz .device-pack/deepep/
else
  echo "pack: no ../shared/anchors/deepep here: deepep_same_gpu will not run" >&2
fi
