#!/usr/bin/env bash
# EPX demo: two epxd daemons on loopback (two emulated nodes, tcp provider),
# a 4-rank job (2 ranks per daemon) bootstrapped through them, the rank
# table every rank received, then a clean shutdown.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
bazel build //daemon:epxd //tools:epxctl >/dev/null 2>&1 || bazel build //daemon:epxd //tools:epxctl
epxd=bazel-bin/daemon/epxd
epxctl=bazel-bin/tools/epxctl

dir=$(mktemp -d /tmp/epx-demo-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

peer_address() {  # socket -> the daemon's Peer address
  "$epxctl" --socket "$1" status --json | sed -n 's/.*"peerAddress": "\(.*\)".*/\1/p'
}

for node in node-a node-b; do
  "$epxd" --node-name "$node" --control-socket "$dir/$node.sock" --peer-listen 127.0.0.1:0 \
    --provider tcp --rail-domains lo --log-file "$dir/$node.log" &
  pids+=($!)
done
for node in node-a node-b; do
  for _ in $(seq 100); do "$epxctl" --socket "$dir/$node.sock" ping >/dev/null 2>&1 && break; sleep 0.1; done
  "$epxctl" --socket "$dir/$node.sock" ping
done
coordinator=$(peer_address "$dir/node-a.sock")
echo "coordinator: node-a at $coordinator"

# Each rank is an `epxctl join --hold` process: it joins, prints its rank
# table, and holds its rank until its stdin (a fifo here) closes.
holders=()
for rank in 0 1 2 3; do
  node=node-a; ((rank >= 2)) && node=node-b
  mkfifo "$dir/hold$rank"
  "$epxctl" --socket "$dir/$node.sock" join --job demo --world 4 --rank "$rank" --local-rank $((rank % 2)) \
    --coordinator "$coordinator" --timeout-ms 20000 --hold <"$dir/hold$rank" >"$dir/rank$rank.out" 2>&1 &
  holders+=($!)
  exec {fd}>"$dir/hold$rank"
  eval "hold_fd_$rank=$fd"
done
for rank in 0 1 2 3; do
  for _ in $(seq 200); do grep -q "holding rank" "$dir/rank$rank.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "holding rank" "$dir/rank$rank.out" || { echo "rank $rank did not join:"; cat "$dir/rank$rank.out"; exit 1; }
done

echo
echo "rank table (as rank 0 received it):"
sed -n '1,5p' "$dir/rank0.out"
same=yes
for rank in 1 2 3; do
  cmp -s <(sed -n '1,5p' "$dir/rank0.out") <(sed -n '1,5p' "$dir/rank$rank.out") || same=no
done
echo "all 4 ranks received the same table: $same"
echo
"$epxctl" --socket "$dir/node-a.sock" jobs

# Leave: close each rank's stdin; then stop the daemons gracefully.
for rank in 0 1 2 3; do eval "exec {hold_fd_$rank}>&-"; done
for p in "${holders[@]}"; do wait "$p"; done
for p in "${pids[@]}"; do kill -TERM "$p"; done
for p in "${pids[@]}"; do wait "$p"; done
pids=()
echo
echo "daemons stopped cleanly"
[[ $same == yes ]]
