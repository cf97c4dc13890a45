#!/usr/bin/env bash
# Times normal-mode dispatch/combine as engines run it: one epxd (provider
# shm) and N rank processes (tools/device/normal_rank --mode bench) on the
# GPUs round-robin; ranks sharing a GPU each get their share of its SMs
# (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, effective under MPS). Rank 0 prints
# one "NORMAL_BENCH {json}" line (docs/PERFORMANCE.md).
#   tools/device/normal_bench.sh BIN_DIR RANKS [normal_rank flags...]
# NODES=n (default 1) emulates n nodes: a daemon each (shm between them),
# RANKS / n consecutive ranks per daemon, so tokens for another node cross
# the daemons once and fan out over NVLink there. RAILS_PER_DOMAIN=k
# (default 1) gives each daemon k shm rails, so its large writes are
# striped over k copying proxy threads (epxd's rails_per_domain), and the
# plain libfabric exchange baseline runs k endpoint pairs at once to match.
# EPXD_ARGS: more epxd flags (e.g. "--single-job-bound off
# --job-inflight-kib 4096", the in-flight bounds of docs/PERFORMANCE.md).
# The baseline's second side runs in a process of its own
# (BIN_DIR/fabric_exchange_peer), as the two daemons are two processes.
set -euo pipefail
bin=$1 ranks=$2
shift 2
nodes=${NODES:-1}
rails=${RAILS_PER_DOMAIN:-1}
dir=$(mktemp -d)
daemons=()
trap 'kill "${daemons[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
ports=()
for n in $(seq 0 $((nodes - 1))); do
  port=$((40000 + RANDOM % 20000))
  ports+=("$port")
  "$bin/epxd" --node-name "node$n" --control-socket "$dir/$n.sock" --peer-listen "127.0.0.1:$port" --provider shm \
    --proxy-busy-poll true --rails-per-domain "$rails" --log-level info ${EPXD_ARGS:-} >"$dir/epxd$n.log" 2>&1 &
  daemons+=($!)
done
for n in $(seq 0 $((nodes - 1))); do
  for _ in $(seq 100); do [[ -S $dir/$n.sock ]] && break; sleep 0.1; done
  [[ -S $dir/$n.sock ]] || { echo "epxd $n did not start:"; cat "$dir/epxd$n.log"; exit 1; }
done
per_node=$((ranks / nodes))
gpus=$(nvidia-smi -L | wc -l)
share=$((100 / (((per_node + gpus - 1) / gpus) * nodes)))
pids=()
for r in $(seq 0 $((ranks - 1))); do
  n=$((r / per_node)) local=$((r % per_node))
  CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=$share "$bin/normal_rank" --socket "$dir/$n.sock" --job bench --world "$ranks" \
    --rank "$r" --local-rank "$local" --coordinator "127.0.0.1:${ports[0]}" --device $((local % gpus)) --mode bench --baseline-pairs "$rails" \
    --fabric-peer "$(realpath "$bin")/fabric_exchange_peer" "$@" \
    >"$dir/rank$r.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
cat "$dir/rank0.log"
for r in $(seq 1 $((ranks - 1))); do grep -h "^NORMAL_STAGES" "$dir/rank$r.log" || true; done
[[ $rc -eq 0 ]] || tail -n 5 "$dir"/rank*.log
exit $rc
