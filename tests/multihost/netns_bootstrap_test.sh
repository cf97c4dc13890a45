#!/usr/bin/env bash
# Two "hosts" in network namespaces joined by a veth pair, one epxd in each
# (tcp provider on the veth), and a 2-rank job across them: each rank must
# get the same rank table, with the peer's rail on the other namespace; then
# a verified data exchange between them through the daemons' proxies.
# Needs root (ip netns); without it the test prints "EPX_TEST_SKIPPED: <why>"
# and exits 0, which tools/test.sh counts as skipped.
set -euo pipefail

if [[ $(id -u) -ne 0 ]] || ! command -v ip >/dev/null; then
  echo "EPX_TEST_SKIPPED: multihost_netns_test needs root and iproute2 (ip netns)"
  exit 0
fi

root=${TEST_SRCDIR:-$(dirname "$0")/../..}/${TEST_WORKSPACE:-epx}
epxd=$root/daemon/epxd
epxctl=$root/tools/epxctl
exchange=$root/tools/epx_exchange
[[ -x $epxd ]] || { epxd=bazel-bin/daemon/epxd; epxctl=bazel-bin/tools/epxctl; exchange=bazel-bin/tools/epx_exchange; }

id=$$
ns_a=epx-a-$id ns_b=epx-b-$id
veth_a=epxa$((id % 100000)) veth_b=epxb$((id % 100000))
# A private /24 per run so parallel runs do not collide.
net=10.$((200 + id % 50)).$((id % 250)).
dir=$(mktemp -d /tmp/epx-netns-XXXXXX)
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
  [[ -n ${EPX_KEEP_TEST_DIRS:-} ]] || rm -rf "$dir"
}
trap cleanup EXIT

ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add "$veth_a" type veth peer name "$veth_b"
ip link set "$veth_a" netns "$ns_a"
ip link set "$veth_b" netns "$ns_b"
ip -n "$ns_a" addr add "${net}1/24" dev "$veth_a"
ip -n "$ns_b" addr add "${net}2/24" dev "$veth_b"
for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
ip -n "$ns_a" link set "$veth_a" up
ip -n "$ns_b" link set "$veth_b" up

# One cluster secret: Peer calls carry its proof, and each daemon's stated
# IP address is checked against the source of its calls (two real IPs here).
(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/cluster.secret")
start_daemon() {  # ns name veth ip
  ip netns exec "$1" "$epxd" --node-name "$2" --control-socket "$dir/$2.sock" --peer-listen "$4:7470" \
    --provider tcp --rail-domains "$3" --log-level debug --peer-secret-file "$dir/cluster.secret" \
    >"$dir/$2.log" 2>&1 &
  pids+=($!)
}
start_daemon "$ns_a" host-a "$veth_a" "${net}1"
start_daemon "$ns_b" host-b "$veth_b" "${net}2"
for name in host-a host-b; do
  for _ in $(seq 100); do [[ -S $dir/$name.sock ]] && break; sleep 0.1; done
  [[ -S $dir/$name.sock ]] || { echo "FAIL: epxd $name did not start"; cat "$dir/$name.log"; exit 1; }
done

coordinator="${net}1:7470"
ip netns exec "$ns_b" "$epxctl" --socket "$dir/host-b.sock" ping --peer "$coordinator" \
  || { echo "FAIL: host-b cannot reach the coordinator on host-a"; exit 1; }
ip netns exec "$ns_a" "$epxctl" --socket "$dir/host-a.sock" join --job xhost --world 2 --rank 0 \
  --coordinator "$coordinator" --timeout-ms 20000 >"$dir/rank0.out" 2>&1 &
r0=$!
ip netns exec "$ns_b" "$epxctl" --socket "$dir/host-b.sock" join --job xhost --world 2 --rank 1 \
  --coordinator "$coordinator" --timeout-ms 20000 >"$dir/rank1.out" 2>&1 &
r1=$!
rc=0
wait $r0 || rc=1
wait $r1 || rc=1
cat "$dir/rank0.out" "$dir/rank1.out"
if [[ $rc -ne 0 ]]; then
  echo "FAIL: a rank could not join"; tail -n 20 "$dir"/host-*.log; exit 1
fi
if ! cmp -s "$dir/rank0.out" "$dir/rank1.out"; then
  echo "FAIL: the two ranks got different rank tables"; exit 1
fi
grep -q "rank 0 local 0 node host-a daemon ${net}1:7470" "$dir/rank0.out" || { echo "FAIL: rank 0 entry"; exit 1; }
grep -q "rank 1 local 0 node host-b daemon ${net}2:7470" "$dir/rank0.out" || { echo "FAIL: rank 1 entry"; exit 1; }
grep -q "$veth_b" "$dir/rank0.out" || { echo "FAIL: rank 1's rail is not on host-b's veth"; exit 1; }
echo "PASS: 2-rank job across network namespaces $ns_a and $ns_b"

# The data plane across the veth: a verified exchange, one rank per host.
ip netns exec "$ns_a" "$exchange" --socket "$dir/host-a.sock" --job xdata --world 2 --rank 0 \
  --coordinator "$coordinator" --rounds 3 --bytes-per-peer 524288 --timeout-ms 20000 >"$dir/x0.out" 2>&1 &
x0=$!
ip netns exec "$ns_b" "$exchange" --socket "$dir/host-b.sock" --job xdata --world 2 --rank 1 \
  --coordinator "$coordinator" --rounds 3 --bytes-per-peer 524288 --timeout-ms 20000 >"$dir/x1.out" 2>&1 &
x1=$!
rc=0
wait $x0 || rc=1
wait $x1 || rc=1
cat "$dir/x0.out" "$dir/x1.out"
if [[ $rc -ne 0 ]]; then
  echo "FAIL: the exchange across namespaces failed"; tail -n 20 "$dir"/host-*.log; exit 1
fi
grep -q "every received byte verified" "$dir/x0.out" && grep -q "every received byte verified" "$dir/x1.out" \
  || { echo "FAIL: bytes not verified"; exit 1; }
if grep -q "peer: refused" "$dir"/host-*.log; then
  echo "FAIL: a daemon refused its peer's calls"; grep "peer: refused" "$dir"/host-*.log; exit 1
fi
echo "PASS: verified exchange across network namespaces over the tcp provider (Peer calls authenticated)"
