#!/usr/bin/env bash
# Runs every GPU test and benchmark on the lent GPU machine in one call.
#
# Here (build machine):
#   tools/device/pack.sh              # opt build + .device-pack/ (binaries and their Debian libraries)
# Then one device call, carrying .device-pack:
#   tools/device/run.sh [STEP...]     # default: every step
# Steps: fp8_cast_gpu_test gpu_path_test gpu_device_window_test epx_bench_shm epx_bench_tcp gpu_bench
# Full logs go to $OUT (one file per step); a short table is printed last.
set -uo pipefail
cd "$(dirname "$0")/../.."
pack=.device-pack
out=${OUT:-/tmp/epx-device-out}
mkdir -p "$out" /tmp/rt
for f in "$pack"/debs/*.deb; do dpkg -x "$f" /tmp/rt; done
export LD_LIBRARY_PATH=/tmp/rt/usr/lib/x86_64-linux-gnu:/tmp/rt/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FI_PROVIDER_PATH=/tmp/rt/usr/lib/x86_64-linux-gnu/libfabric
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# Tests find epxd as Bazel runfiles would lay it out.
mkdir -p /tmp/rf/epx/daemon /tmp/rf/epx/tools
cp "$pack/bin/epxd" /tmp/rf/epx/daemon/
cp "$pack/bin/epxctl" /tmp/rf/epx/tools/
export TEST_SRCDIR=/tmp/rf TEST_WORKSPACE=epx
bin=$pack/bin

summary=()
wanted=" ${*:-fp8_cast_gpu_test gpu_path_test gpu_device_window_test epx_bench_shm epx_bench_tcp gpu_bench} "
step() {  # name timeout_s command...
  local name=$1 limit=$2; shift 2
  [[ $wanted == *" $name "* ]] || return 0
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-22s rc=%-3s %4ss' "$name" "$rc" $((SECONDS - start)))")
  echo "== $name: rc=$rc ($((SECONDS - start)) s)"
}

nvidia-smi -L
nproc
step fp8_cast_gpu_test 60 "$bin/fp8_cast_gpu_test"
step gpu_path_test 200 "$bin/gpu_path_test"
step gpu_device_window_test 120 "$bin/gpu_device_window_test"
step epx_bench_shm 100 "$bin/epx_bench" --provider shm --epxd "$bin/epxd" --cores 2,4,6,8
step epx_bench_tcp 100 "$bin/epx_bench" --provider tcp --epxd "$bin/epxd" --cores 2,4,6,8
step gpu_bench 120 "$bin/gpu_bench" --epxd "$bin/epxd" --cores "${EPX_GPU_BENCH_CORES:-2,4,6}"

echo
echo "== results"
for f in fp8_cast_gpu_test gpu_path_test gpu_device_window_test; do [[ -f $out/$f.log ]] && grep -E "test cases|SKIPPED" "$out/$f.log" | tail -n 2 | sed "s/^/$f: /"; done
for f in epx_bench_shm epx_bench_tcp gpu_bench; do [[ -f $out/$f.log ]] || continue; echo "-- $f"; grep -vE "^\[" "$out/$f.log" | tail -n 20; done
echo
printf '%s\n' "${summary[@]}"
