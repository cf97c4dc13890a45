#!/usr/bin/env bash
# Times normal-mode dispatch/combine as engines run it: one epxd (provider
# shm) and N rank processes (tools/device/normal_rank --mode bench) on the
# GPUs round-robin; ranks sharing a GPU each get their share of its SMs
# (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, effective under MPS). Rank 0 prints
# one "NORMAL_BENCH {json}" line (docs/PERFORMANCE.md).
#   tools/device/normal_bench.sh BIN_DIR RANKS [normal_rank flags...]
set -euo pipefail
bin=$1 ranks=$2
shift 2
dir=$(mktemp -d)
port=$((40000 + RANDOM % 20000))
"$bin/epxd" --node-name a --control-socket "$dir/a.sock" --peer-listen "127.0.0.1:$port" --provider shm \
  --log-level info >"$dir/epxd.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [[ -S $dir/a.sock ]] && break; sleep 0.1; done
[[ -S $dir/a.sock ]] || { echo "epxd did not start:"; cat "$dir/epxd.log"; exit 1; }
gpus=$(nvidia-smi -L | wc -l)
share=$((100 / ((ranks + gpus - 1) / gpus)))
pids=()
for r in $(seq 0 $((ranks - 1))); do
  CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=$share "$bin/normal_rank" --socket "$dir/a.sock" --job bench --world "$ranks" \
    --rank "$r" --local-rank "$r" --coordinator "127.0.0.1:$port" --device $((r % gpus)) --mode bench "$@" \
    >"$dir/rank$r.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
cat "$dir/rank0.log"
[[ $rc -eq 0 ]] || tail -n 5 "$dir"/rank*.log
exit $rc
