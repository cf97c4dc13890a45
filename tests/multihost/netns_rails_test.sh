#!/usr/bin/env bash
# Two "hosts" in network namespaces joined by four veth pairs (four subnets),
# one epxd in each with four tcp rails, one per veth:
#   1. the rails pair by subnet and a verified exchange moves every byte;
#   2. a large transfer is striped over all four rails (each rail's posted
#      bytes in `epxctl status --json`);
#   2b. ranks joining with a GPU that config gpu_rails serves from rails 1
#      and 3 stripe over those two only, and status maps the GPU;
#   3. while a stream of large signalled writes runs, one rail's link goes
#      down and up again, 20 times: every byte verified, every signal exact
#      (the exchange checks each word equals its count), both daemons' link
#      watch marks the rail unhealthy ("link down") within a few hundred ms,
#      writes that were in flight on it are sent again on the other three
#      (their signals follow them; a sender's flush still waits for the
#      stalled originals, which tcp delivers once the link is back), and the
#      rail is used again once its link is back.
# The control plane (Peer service) stays on the first veth, which stays up.
# Needs root (ip netns); without it the test prints "EPX_TEST_SKIPPED: <why>"
# and exits 0, which tools/test.sh counts as skipped.
set -euo pipefail

if [[ $(id -u) -ne 0 ]] || ! command -v ip >/dev/null; then
  echo "EPX_TEST_SKIPPED: multihost_rails_test needs root and iproute2 (ip netns)"
  exit 0
fi
if ! command -v python3 >/dev/null; then
  echo "EPX_TEST_SKIPPED: multihost_rails_test needs python3 to read epxctl status --json"
  exit 0
fi

root=${TEST_SRCDIR:-$(dirname "$0")/../..}/${TEST_WORKSPACE:-epx}
epxd=$root/daemon/epxd
epxctl=$root/tools/epxctl
exchange=$root/tools/epx_exchange
[[ -x $epxd ]] || { epxd=bazel-bin/daemon/epxd; epxctl=bazel-bin/tools/epxctl; exchange=bazel-bin/tools/epx_exchange; }

id=$$
ns_a=epx-ra-$id ns_b=epx-rb-$id
# Private /24s per run (10.A.B+k.0/24, k = rail) so parallel runs do not collide.
net_a=$((100 + id % 50)) net_b=$(((id / 50) % 60 * 4))
dir=$(mktemp -d /tmp/epx-rails-XXXXXX)
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
for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
veths_a="" veths_b=""
for k in 0 1 2 3; do
  va=era$k-$((id % 10000)) vb=erb$k-$((id % 10000))
  ip link add "$va" type veth peer name "$vb"
  ip link set "$va" netns "$ns_a"
  ip link set "$vb" netns "$ns_b"
  ip -n "$ns_a" addr add "10.$net_a.$((net_b + k)).1/24" dev "$va"
  ip -n "$ns_b" addr add "10.$net_a.$((net_b + k)).2/24" dev "$vb"
  ip -n "$ns_a" link set "$va" up
  ip -n "$ns_b" link set "$vb" up
  veths_a+="${veths_a:+,}$va"
  veths_b+="${veths_b:+,}$vb"
done

ip_a="10.$net_a.$net_b.1" ip_b="10.$net_a.$net_b.2"
# A GPU that config gpu_rails serves from rails 1 and 3 only (part 2b).
gpu=0000:19:00.0
(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/cluster.secret")
start_daemon() {  # ns name veths ip
  ip netns exec "$1" "$epxd" --node-name "$2" --control-socket "$dir/$2.sock" --peer-listen "$4:7470" \
    --provider tcp --rail-domains "$3" --log-level info --peer-secret-file "$dir/cluster.secret" \
    --rail-stall-ms 500 --rail-cooldown-ms 500 --gpu-rails "$gpu=1+3" >"$dir/$2.log" 2>&1 &
  pids+=($!)
}
start_daemon "$ns_a" host-a "$veths_a" "$ip_a"
start_daemon "$ns_b" host-b "$veths_b" "$ip_b"
for name in host-a host-b; do
  for _ in $(seq 100); do [[ -S $dir/$name.sock ]] && break; sleep 0.1; done
  [[ -S $dir/$name.sock ]] || { echo "FAIL: epxd $name did not start"; cat "$dir/$name.log"; exit 1; }
done
coordinator="$ip_a:7470"

status_json() {  # [a|b]: that host's daemon (default a)
  local host=${1:-a} ns=$ns_a
  [[ $host == b ]] && ns=$ns_b
  ip netns exec "$ns" "$epxctl" --socket "$dir/host-$host.sock" status --json
}
# A rail's field in a host's status: rail_field posted_bytes 2 [b].
rail_field() {
  status_json "${3:-a}" | python3 -c '
import json, sys
field, rail = sys.argv[1], int(sys.argv[2])
camel = "".join(w if i == 0 else w.capitalize() for i, w in enumerate(field.split("_")))
r = json.load(sys.stdin)["rails"][rail]
print(r.get(camel, r.get(field, 0)))' "$1" "$2"
}
# host-b's rail on the same subnet (fabric) as host-a's rail $1.
peer_rail() {
  local fabric
  fabric=$(rail_field fabric "$1")
  status_json b | python3 -c '
import json, sys
rails = json.load(sys.stdin)["rails"]
print([r["index"] if "index" in r else 0 for r in rails if r["fabric"] == sys.argv[1]][0])' "$fabric"
}

rails=$(status_json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["rails"]))')
[[ $rails == 4 ]] || { echo "FAIL: host-a opened $rails rails, not 4"; status_json; exit 1; }
echo "PASS: four tcp rails per daemon, one per veth"
# The rail whose link goes down in part 3: rail 2, unless its veth carries
# the control plane (the first veth), then rail 1. libfabric lists the
# interfaces in its own order.
flap_rail=2
flap=$(status_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rails"][2]["domain"])')
if [[ $flap == era0-* ]]; then
  flap_rail=1
  flap=$(status_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rails"][1]["domain"])')
fi
others=$(for r in 0 1 2 3; do [[ $r == "$flap_rail" ]] || echo -n "$r "; done)

run_exchange() {  # job extra-args...: starts both ranks; their pids in x0 x1
  local job=$1
  shift
  ip netns exec "$ns_a" "$exchange" --socket "$dir/host-a.sock" --job "$job" --world 2 --rank 0 \
    --coordinator "$coordinator" --timeout-ms "${wait_ms:-60000}" "$@" >"$dir/$job.0.out" 2>&1 &
  x0=$!
  ip netns exec "$ns_b" "$exchange" --socket "$dir/host-b.sock" --job "$job" --world 2 --rank 1 \
    --coordinator "$coordinator" --timeout-ms "${wait_ms:-60000}" "$@" >"$dir/$job.1.out" 2>&1 &
  x1=$!
  pids+=("$x0" "$x1")
}
check_exchange() {  # job pids...
  local job=$1 rc=0
  shift
  for p in "$@"; do wait "$p" || rc=1; done
  if [[ $rc -ne 0 ]] || ! grep -q "every received byte verified" "$dir/$job.0.out" ||
    ! grep -q "every received byte verified" "$dir/$job.1.out"; then
    echo "FAIL: exchange $job"; cat "$dir/$job.0.out" "$dir/$job.1.out"; tail -n 30 "$dir"/host-*.log; exit 1
  fi
}

# 1. Small random blocks (not striped): every byte checked.
run_exchange small --rounds 3 --bytes-per-peer 524288
check_exchange small "$x0" "$x1"
echo "PASS: verified exchange over four rails"

# 2. A large transfer: 4 MiB writes, striped over the four rails.
declare -a before
for r in 0 1 2 3; do before[r]=$(rail_field posted_bytes "$r"); done
run_exchange large --rounds 4 --bytes-per-peer 16777216 --block-bytes 4194304
check_exchange large "$x0" "$x1"
for r in 0 1 2 3; do
  got=$(( $(rail_field posted_bytes "$r") - before[r] ))
  # 2 ranks x 4 rounds x 16 MiB = 128 MiB from host-a, about 32 MiB per rail.
  (( got >= 16 * 1048576 )) || { echo "FAIL: rail $r posted only $got bytes of the striped transfer"; status_json; exit 1; }
  echo "rail $r: $got bytes of the striped transfer"
done
echo "PASS: a large transfer striped over all four rails"

# 2b. The same from ranks that join with a GPU the config serves from rails
# 1 and 3: their rings sit on one of those and stripe over those two only.
for r in 0 1 2 3; do before[r]=$(rail_field posted_bytes "$r"); done
run_exchange affine --rounds 4 --bytes-per-peer 16777216 --block-bytes 4194304 --gpu-pci-address "$gpu"
check_exchange affine "$x0" "$x1"
for r in 0 1 2 3; do
  got=$(( $(rail_field posted_bytes "$r") - before[r] ))
  if [[ $r == 1 || $r == 3 ]]; then
    (( got >= 16 * 1048576 )) || { echo "FAIL: the GPU's rail $r posted only $got bytes"; status_json; exit 1; }
  else
    (( got < 1048576 )) || { echo "FAIL: rail $r, not the GPU's, posted $got bytes of its transfer"; status_json; exit 1; }
  fi
  echo "rail $r: $got bytes of the GPU's transfer"
done
status_json | python3 -c '
import json, sys
g = [g for g in json.load(sys.stdin).get("gpuRails", []) if g["gpu"] == sys.argv[1]]
assert g and g[0]["rails"] == [1, 3] and g[0]["why"] == "config gpu_rails", g
' "$gpu" || { echo "FAIL: status does not map GPU $gpu to rails 1 and 3 by config"; status_json; exit 1; }
echo "PASS: a GPU's transfer stays on its configured rails 1 and 3, and status maps it"

# 3. Link down and up, 20 times, under a stream of large signalled writes.
# Either daemon may be the one whose writes stall on the rail (whichever had
# writes in flight on it), so both are watched; host-b's rail on that
# subnet may have another index.
flap_b=$(peer_rail "$flap_rail")
# One status call per host: "<a's health> <b's health> <a's + b's posted
# bytes on the flapped rail> <a's + b's times it went unhealthy>".
snapshot() {
  python3 - "$flap_rail" "$flap_b" <(status_json a) <(status_json b) <<'PY'
import json, sys
ra, rb = int(sys.argv[1]), int(sys.argv[2])
a = json.load(open(sys.argv[3]))["rails"][ra]
b = json.load(open(sys.argv[4]))["rails"][rb]
n = lambda r, k: int(r.get(k, 0))
print(a["health"], b["health"], n(a, "postedBytes") + n(b, "postedBytes"), n(a, "healthChanges") + n(b, "healthChanges"),
      (a.get("healthReason") or b.get("healthReason") or "-").replace(" ", "_"))
PY
}
resent_count() { cat "$dir"/host-*.log | grep -c "sent again on rail" || true; }
# A sender's flush waits for writes stalled on the downed rail until they
# resolve (tcp delivers them once the link is back: seen from 10 s to over
# a minute after link up, by TCP's retransmission backoff), so the stream's
# waits get 180 s.
wait_ms=180000 run_exchange stream --rounds 100000 --bytes-per-peer 8388608 --block-bytes 1048576
stream_pids="$x0 $x1"
sleep 2
for cycle in $(seq 20); do
  cycle_start=$SECONDS
  read -r _ _ _ changes _ < <(snapshot)
  resent_before=$(resent_count)
  ip -n "$ns_a" link set "$flap" down
  # Either daemon may be the one whose writes stall on the rail (whichever
  # had writes in flight on it); its stalled writes go out on the others.
  down_at=$(date +%s%N)
  for _ in $(seq 100); do
    read -r ha hb _ now reason < <(snapshot)
    [[ $ha == unhealthy && $hb == unhealthy ]] && break
    sleep 0.05
  done
  noticed_ms=$(( ($(date +%s%N) - down_at) / 1000000 ))
  [[ $ha == unhealthy && $hb == unhealthy ]] || { echo "FAIL: cycle $cycle: rail $flap_rail not marked unhealthy on both hosts with its link down"; status_json; status_json b; exit 1; }
  (( now > changes )) || { echo "FAIL: cycle $cycle: the rail's unhealthy count did not grow"; exit 1; }
  # The link watch (sysfs operstate, every 100 ms) sees it before any write
  # stalls; writes already in flight on the rail stall and are sent again
  # on the others after rail_stall_ms (500 ms). A link down between two
  # rounds of the stream leaves none in flight, so none may be sent again.
  [[ $reason == link_down:* ]] || { echo "FAIL: cycle $cycle: rail $flap_rail unhealthy for another reason than its link: $reason"; exit 1; }
  sleep 1
  resent=$(( $(resent_count) - resent_before ))
  ip -n "$ns_a" link set "$flap" up
  read -r _ _ up_bytes _ _ < <(snapshot)
  for _ in $(seq 600); do
    read -r ha hb bytes _ _ < <(snapshot)
    [[ $ha == healthy && $hb == healthy ]] && (( bytes > up_bytes )) && break
    sleep 0.1
  done
  [[ $ha == healthy && $hb == healthy ]] || { echo "FAIL: cycle $cycle: rail $flap_rail not healthy again on both hosts after its link came back"; status_json; status_json b; exit 1; }
  (( bytes > up_bytes )) || { echo "FAIL: cycle $cycle: rail $flap_rail not used again"; exit 1; }
  echo "cycle $cycle: rail $flap_rail ($flap) down, unhealthy on both hosts within $noticed_ms ms: ${reason//_/ }; $resent stalled write(s) sent again on the others; back up, healthy and used again ($((SECONDS - cycle_start)) s)"
done
# The stream ran through all of it: every round verified every byte and
# found every signal exact (epx_exchange exits at the first that is not).
for p in $stream_pids; do
  kill -0 "$p" 2>/dev/null || { echo "FAIL: the stream stopped"; cat "$dir"/stream.*.out; tail -n 30 "$dir"/host-*.log; exit 1; }
done
rounds_before=$(grep -c "verified" "$dir/stream.0.out")
sleep 2
rounds_after=$(grep -c "verified" "$dir/stream.0.out")
(( rounds_after > rounds_before )) || { echo "FAIL: the stream made no progress after the last cycle"; exit 1; }
for p in $stream_pids; do kill -TERM "$p" 2>/dev/null || true; done
if grep -q "differ\|expected exactly\|epx_exchange:" "$dir"/stream.*.out; then
  echo "FAIL: the stream reported an error"; cat "$dir"/stream.*.out; exit 1
fi
echo "PASS: rail $flap_rail's link down and up 20 times under a stream: $rounds_after rounds of 8 MiB per peer, every byte verified, every signal exact, stalled writes sent again on the other rails, rail $flap_rail used again after each"
