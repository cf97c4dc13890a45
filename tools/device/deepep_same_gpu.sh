#!/usr/bin/env bash
# DeepEP v1 and EPX side by side in one device call, through the same
# script (tools/device/deep_ep_bench.py, deep_ep's public API only): two
# rank processes per implementation, DeepEP's test shapes.
#   tools/device/deepep_same_gpu.sh BIN_DIR DEEPEP_TARBALL
# On a one-GPU machine both ranks share the GPU under MPS (start it first,
# as run.sh's callers do), each with half its SMs; DeepEP's own test
# programs initialise NCCL, which refuses two ranks on one device, while
# this script joins the ranks with gloo. The figures then compare the kernels on one GPU's memory, not
# NVLink: a same-run comparison, not DeepEP's published EP2 setting.
# DeepEP is built from the tarball (../shared/anchors/deepep, packed into
# .device-pack/deepep by pack.sh) with the machine's torch and nvcc, into
# $DEEPEP_WORK (default /tmp/deepep); it is read and run, never copied in.
set -euo pipefail
bin=$1 tarball=$2
here=$(cd "$(dirname "$0")" && pwd)
work=${DEEPEP_WORK:-/tmp/deepep}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONDONTWRITEBYTECODE=1
if [[ ! -f $work/DeepEP/.built ]]; then
  rm -rf "$work" && mkdir -p "$work"
  tar -xzf "$tarball" -C "$work"
  # CUDA 13 keeps the CCCL headers (cuda/std/...) under include/cccl.
  sed -i "s|include_dirs = \['csrc/'\]|include_dirs = ['csrc/', '/usr/local/cuda/include/cccl']|" "$work/DeepEP/setup.py"
  echo "building DeepEP (log: $work/build.log)"
  start=$SECONDS
  (cd "$work/DeepEP" && TORCH_CUDA_ARCH_LIST=9.0 python3 setup.py build_ext --inplace >"$work/build.log" 2>&1) ||
    { tail -n 40 "$work/build.log"; exit 1; }
  echo "built DeepEP in $((SECONDS - start)) s"
  touch "$work/DeepEP/.built"
fi
gpus=$(nvidia-smi -L | wc -l)
share=$((gpus >= 2 ? 100 : 50))
dir=$(mktemp -d)
daemon=
trap '[[ -n $daemon ]] && kill $daemon 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
"$bin/epxd" --node-name a --control-socket "$dir/a.sock" --peer-listen 127.0.0.1:0 --provider shm \
  --log-level info >"$dir/epxd.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do [[ -S $dir/a.sock ]] && break; sleep 0.1; done
export EPX_SOCKET=$dir/a.sock EPX_LIBRARY=$bin/libepx_c.so CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=$share

# run IMPL MODES LIMIT_S: two ranks, rank 0's DEEP_EP_BENCH line; a failure
# prints both ranks' tails and fails the script at the end, not at once, so
# one mode's failure does not hide the others' figures.
rc=0
run() {
  local impl=$1 modes=$2 limit=$3 pids=() r ok=0
  rm -f "$dir/rdv"
  for r in 0 1; do
    if [[ $impl == deepep ]]; then
      DEEP_EP_BENCH_IMPL=deepep PYTHONPATH=$work/DeepEP timeout "$limit" \
        python3 "$here/deep_ep_bench.py" "$dir/rdv" "$r" 2 "$modes" >"$dir/$impl.$modes.$r.log" 2>&1 &
    else
      timeout "$limit" python3 "$here/deep_ep_bench.py" "$dir/rdv" "$r" 2 "$modes" >"$dir/$impl.$modes.$r.log" 2>&1 &
    fi
    pids+=($!)
  done
  for r in 0 1; do wait "${pids[$r]}" || ok=1; done
  grep -h "^DEEP_EP_BENCH" "$dir/$impl.$modes.0.log" || true
  if [[ $ok -ne 0 ]]; then
    echo "FAILED: $impl $modes"
    for r in 0 1; do echo "-- rank $r"; grep -v "^\s*$" "$dir/$impl.$modes.$r.log" | grep -v "destroy() was not called" | tail -n 25; done
    rc=1
  fi
}
run deepep normal 180
run epx normal 180
run deepep ll 120
run epx ll 120
exit $rc
