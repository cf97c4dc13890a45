#!/usr/bin/env bash
# EPX demo: two epxd daemons on loopback (two emulated nodes, tcp provider),
# a 4-rank job (2 ranks per daemon) bootstrapped through them, then a real
# all-to-all exchange: every rank writes a distinct pattern of variable-sized
# blocks to every rank through the daemons' proxies, with counted signals,
# and every received byte is checked. Ends with a one-line summary.
#   tools/demo.sh [--provider tcp|shm] [--rounds N] [--bytes-per-peer B]
set -euo pipefail
cd "$(dirname "$0")/.."
provider=tcp rounds=4 bytes=$((1 << 20))
while (($#)); do
  case $1 in
    --provider) provider=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --bytes-per-peer) bytes=$2; shift 2 ;;
    *) echo "usage: tools/demo.sh [--provider tcp|shm] [--rounds N] [--bytes-per-peer B]" >&2; exit 2 ;;
  esac
done
tools/setup.sh
targets=(//daemon:epxd //tools:epxctl //tools:epx_exchange)
bazel build "${targets[@]}" >/dev/null 2>&1 || bazel build "${targets[@]}"
epxd=bazel-bin/daemon/epxd
epxctl=bazel-bin/tools/epxctl
exchange=bazel-bin/tools/epx_exchange

dir=$(mktemp -d /tmp/epx-demo-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

domains=()
[[ $provider == tcp ]] && domains=(--rail-domains lo)
# The daemons authenticate each other's Peer calls with a secret made for
# this run (mode 0600 in the private temp dir, removed at exit).
secret=$dir/cluster.secret
(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$secret")
for node in node-a node-b; do
  "$epxd" --node-name "$node" --control-socket "$dir/$node.sock" --peer-listen 127.0.0.1:0 \
    --provider "$provider" "${domains[@]}" --peer-secret-file "$secret" --log-file "$dir/$node.log" &
  pids+=($!)
done
for node in node-a node-b; do
  for _ in $(seq 100); do "$epxctl" --socket "$dir/$node.sock" ping >/dev/null 2>&1 && break; sleep 0.1; done
  "$epxctl" --socket "$dir/$node.sock" ping
done
coordinator=$("$epxctl" --socket "$dir/node-a.sock" status --json | sed -n 's/.*"peerAddress": "\(.*\)".*/\1/p')
echo "coordinator: node-a at $coordinator; provider $provider; Peer calls proven with a per-run cluster secret"
echo

ranks=()
for rank in 0 1 2 3; do
  node=node-a; ((rank >= 2)) && node=node-b
  extra=()
  ((rank == 0)) && extra=(--print-table)
  "$exchange" --socket "$dir/$node.sock" --job demo --world 4 --rank "$rank" --local-rank $((rank % 2)) \
    --coordinator "$coordinator" --rounds "$rounds" --bytes-per-peer "$bytes" "${extra[@]}" >"$dir/rank$rank.out" 2>&1 &
  ranks+=($!)
done
ok=yes
for i in 0 1 2 3; do wait "${ranks[$i]}" || ok=no; done
echo "rank table (as rank 0 received it):"
sed -n '/^job /,/rank 3 local/p' "$dir/rank0.out"
echo
for rank in 0 1 2 3; do grep -v "^summary\|^job \|^  rank" "$dir/rank$rank.out" | tail -n 1; done
echo
"$epxctl" --socket "$dir/node-a.sock" status | sed -n '/^rails/,/^clients/p' | head -n 3

for p in "${pids[@]}"; do kill -TERM "$p"; done
for p in "${pids[@]}"; do wait "$p"; done
pids=()
if [[ $ok != yes ]]; then
  echo "demo FAILED:"; cat "$dir"/rank*.out; exit 1
fi
cat "$dir"/rank*.out | awk '/^summary/ {
    for (i = 2; i <= NF; ++i) { split($i, kv, "="); v[kv[1]] = kv[2] }
    bytes += v["bytes"]; if (v["seconds"] > secs) secs = v["seconds"] }
  END { printf "exchange OK: 4 ranks, 2 daemons, %d rounds, %.1f MB moved and verified byte for byte in %.2f s (%.1f MB/s aggregate)\n",
        '"$rounds"', bytes / 1e6, secs, bytes / secs / 1e6 }'
