#!/usr/bin/env bash
# Runs tools/device/deep_ep_bench.py as two ranks against one epxd (provider
# shm) on the GPUs round-robin (one GPU: start MPS first, as run.sh's
# callers do). Rank 0 prints "DEEP_EP_BENCH {json}".
#   tools/device/deep_ep_bench.sh BIN_DIR   (BIN_DIR: epxd, libepx_c.so)
set -euo pipefail
bin=$1
dir=$(mktemp -d)
"$bin/epxd" --node-name a --control-socket "$dir/a.sock" --peer-listen 127.0.0.1:0 --provider shm \
  --log-level info >"$dir/epxd.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [[ -S $dir/a.sock ]] && break; sleep 0.1; done
export EPX_SOCKET=$dir/a.sock EPX_LIBRARY=$bin/libepx_c.so PYTHONDONTWRITEBYTECODE=1 CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50
pids=()
for r in 0 1; do
  python3 tools/device/deep_ep_bench.py "$dir/rdv" "$r" 2 >"$dir/rank$r.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
cat "$dir/rank0.log"
[[ $rc -eq 0 ]] || tail -n 20 "$dir/rank1.log"
exit $rc
