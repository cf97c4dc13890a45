#!/usr/bin/env bash
# Striped bandwidth over 1, 2 and 4 rails in one run, and the time from a
# rail failing to its traffic running on the others (issue 13).
#
# Two "hosts" in network namespaces joined by four veth pairs (one subnet
# each), an epxd in each with the tcp provider on the first N veths, and a
# 2-rank epx_exchange --bandwidth of large signalled writes per rail count
# (the pattern is written once and the last round's bytes verified, so the
# figure is the transfer's, not the program's byte-by-byte pattern work);
# then, with four rails, a stream during which one rail's link
# goes down: the time from `ip link set down` to the rail marked unhealthy
# (the daemons' link watch) and to the first write that was in flight on it
# sent again on another rail (after rail_stall_ms), and the exchange's rate
# before and while the link is down.
#
#   tools/bench/rails_bench.sh [--bin DIR] [--rails "1 2 4"] [--block-bytes B]
#       [--bytes-per-peer B] [--rounds N] [--stall-ms MS] [--down-s S] [--cores LIST]
# --bin: where epxd, epxctl and epx_exchange are (default bazel-bin layout).
# --cores: taskset CPU list for both daemons (default: none).
# Needs root (ip netns). Prints a table; exits non-zero if a run failed.
set -euo pipefail

bin="" rails_list="1 2 4" block=4194304 per_peer=33554432 rounds=16 stall_ms=500 down_s=4 cores=""
while (($#)); do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --rails) rails_list=$2; shift 2 ;;
    --block-bytes) block=$2; shift 2 ;;
    --bytes-per-peer) per_peer=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --stall-ms) stall_ms=$2; shift 2 ;;
    --down-s) down_s=$2; shift 2 ;;
    --cores) cores=$2; shift 2 ;;
    *) echo "usage: $0 [--bin DIR] [--rails \"1 2 4\"] [--block-bytes B] [--bytes-per-peer B] [--rounds N] [--stall-ms MS] [--down-s S] [--cores LIST]" >&2; exit 2 ;;
  esac
done
if [[ -n $bin ]]; then
  epxd=$bin/epxd epxctl=$bin/epxctl exchange=$bin/epx_exchange
else
  epxd=bazel-bin/daemon/epxd epxctl=bazel-bin/tools/epxctl exchange=bazel-bin/tools/epx_exchange
fi
for b in "$epxd" "$epxctl" "$exchange"; do [[ -x $b ]] || { echo "rails_bench: $b missing (bazel build //daemon:epxd //tools:epxctl //tools:epx_exchange)" >&2; exit 2; }; done
# Where network namespaces cannot be made, say so and stop (not a failure).
if [[ $(id -u) -ne 0 ]] || ! command -v ip >/dev/null || ! ip netns add "epx-probe-$$" 2>/dev/null; then
  echo "rails_bench: SKIPPED: needs root and iproute2 network namespaces (ip netns)"
  exit 0
fi
ip netns del "epx-probe-$$"

id=$$
ns_a=epx-ba-$id ns_b=epx-bb-$id
net="10.$((150 + id % 50)).$(((id / 50) % 60 * 4))"
dir=$(mktemp -d /tmp/epx-rails-bench-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

ip netns add "$ns_a"
ip netns add "$ns_b"
for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
base=${net##*.}
prefix=${net%.*}
for k in 0 1 2 3; do
  ip link add "bra$k-$((id % 10000))" type veth peer name "brb$k-$((id % 10000))"
  ip link set "bra$k-$((id % 10000))" netns "$ns_a"
  ip link set "brb$k-$((id % 10000))" netns "$ns_b"
  ip -n "$ns_a" addr add "$prefix.$((base + k)).1/24" dev "bra$k-$((id % 10000))"
  ip -n "$ns_b" addr add "$prefix.$((base + k)).2/24" dev "brb$k-$((id % 10000))"
  ip -n "$ns_a" link set "bra$k-$((id % 10000))" up
  ip -n "$ns_b" link set "brb$k-$((id % 10000))" up
done
ip_a="$prefix.$base.1" ip_b="$prefix.$base.2"
pin=()
[[ -n $cores ]] && pin=(taskset -c "$cores")

start_daemons() {  # rails extra-flags...
  local n=$1 va="" vb=""
  shift
  for ((k = 0; k < n; k++)); do va+="${va:+,}bra$k-$((id % 10000))"; vb+="${vb:+,}brb$k-$((id % 10000))"; done
  rm -f "$dir"/*.sock "$dir"/*.log
  ip netns exec "$ns_a" "${pin[@]}" "$epxd" --node-name host-a --control-socket "$dir/a.sock" --peer-listen "$ip_a:7470" \
    --provider tcp --rail-domains "$va" --rail-stall-ms "$stall_ms" "$@" >"$dir/a.log" 2>&1 &
  da=$!
  ip netns exec "$ns_b" "${pin[@]}" "$epxd" --node-name host-b --control-socket "$dir/b.sock" --peer-listen "$ip_b:7470" \
    --provider tcp --rail-domains "$vb" --rail-stall-ms "$stall_ms" "$@" >"$dir/b.log" 2>&1 &
  db=$!
  pids+=("$da" "$db")
  for s in a b; do
    for _ in $(seq 100); do [[ -S $dir/$s.sock ]] && break; sleep 0.1; done
    [[ -S $dir/$s.sock ]] || { echo "rails_bench: epxd did not start"; cat "$dir/$s.log"; exit 1; }
  done
}
stop_daemons() { kill "$da" "$db" 2>/dev/null || true; wait "$da" "$db" 2>/dev/null || true; }
exchange_pair() {  # job out-prefix args...: runs both ranks to the end
  local job=$1 out=$2
  shift 2
  ip netns exec "$ns_a" "$exchange" --socket "$dir/a.sock" --job "$job" --world 2 --rank 0 --coordinator "$ip_a:7470" \
    --timeout-ms 60000 "$@" >"$out.0" 2>&1 &
  local x0=$!
  ip netns exec "$ns_b" "$exchange" --socket "$dir/b.sock" --job "$job" --world 2 --rank 1 --coordinator "$ip_a:7470" \
    --timeout-ms 60000 "$@" >"$out.1" 2>&1 &
  local x1=$!
  pids+=("$x0" "$x1")
  wait "$x0" && wait "$x1"
}
rate() { sed -n 's/.*, \([0-9.]*\) MB\/s, .*verified$/\1/p' "$1"; }

echo "rails_bench: tcp provider over veth pairs in network namespaces; $(nproc) CPUs; exchange of $((block >> 10)) KiB writes, $((per_peer >> 20)) MiB per peer, $rounds rounds"
printf '%-34s %12s %10s\n' "run" "MB/s/rank" "x 1 rail"
one=""
status=0
for n in $rails_list; do
  start_daemons "$n"
  if exchange_pair "bw$n" "$dir/bw$n" --rounds "$rounds" --bytes-per-peer "$per_peer" --block-bytes "$block" --bandwidth; then
    r=$(rate "$dir/bw$n.0")
    [[ -n $one ]] || one=$r
    printf '%-34s %12s %10s\n' "striped, $n rail(s)" "$r" "$(python3 -c "print(f'{$r/$one:.2f}')")"
  else
    echo "striped, $n rail(s): FAILED"; cat "$dir/bw$n.0" "$dir/bw$n.1"; status=1
  fi
  stop_daemons
done
# Small writes on one rail, striping on and off: striping must not slow them.
for mode in off on; do  # off first: a first run pays the warm-up
  flags=()
  [[ $mode == off ]] && flags=(--stripe-off true)
  start_daemons 1 "${flags[@]}"
  if exchange_pair "small$mode" "$dir/small$mode" --rounds "$rounds" --bytes-per-peer 1048576 --bandwidth; then
    printf '%-34s %12s\n' "small writes, 1 rail, striping $mode" "$(rate "$dir/small$mode.0")"
  else
    echo "small writes ($mode): FAILED"; status=1
  fi
  stop_daemons
done

# Failover: four rails, a stream, rail of the third veth down for down_s.
start_daemons 4
ip netns exec "$ns_a" "$exchange" --socket "$dir/a.sock" --job fo --world 2 --rank 0 --coordinator "$ip_a:7470" \
  --timeout-ms 60000 --rounds 1000000 --bytes-per-peer "$per_peer" --block-bytes "$block" >"$dir/fo.0" 2>&1 &
pids+=($!)
ip netns exec "$ns_b" "$exchange" --socket "$dir/b.sock" --job fo --world 2 --rank 1 --coordinator "$ip_a:7470" \
  --timeout-ms 60000 --rounds 1000000 --bytes-per-peer "$per_peer" --block-bytes "$block" >"$dir/fo.1" 2>&1 &
pids+=($!)
sleep 3
r0=$(grep -c verified "$dir/fo.0" || true)
sleep "$down_s"
before=$(( $(grep -c verified "$dir/fo.0" || true) - r0 ))
down_at=$(date +%s.%N)
ip -n "$ns_a" link set "bra2-$((id % 10000))" down
r1=$(grep -c verified "$dir/fo.0" || true)
sleep "$down_s"
during=$(( $(grep -c verified "$dir/fo.0" || true) - r1 ))
ip -n "$ns_a" link set "bra2-$((id % 10000))" up
sleep 2
first_log() { { cat "$dir/a.log" "$dir/b.log" | grep "$1" || true; } | sed -n 's/^\([0-9T:.-]*\) .*/\1/p' | sort | head -1; }
since_down() { python3 -c "
import datetime
t = datetime.datetime.strptime('$1', '%Y-%m-%dT%H:%M:%S.%f').timestamp()
print(f'{(t - $down_at) * 1000:.0f}')"; }
marked=$(first_log "reports the link down")
first=$(first_log "sent again on rail")
stop_daemons
if [[ -z $marked ]]; then
  echo "failover: neither daemon's link watch saw the link go down"; status=1
else
  printf '%-34s %12s\n' "link down -> rail unhealthy" "$(since_down "$marked") ms (link watch, every 100 ms)"
fi
if [[ -z $first ]]; then
  printf '%-34s %12s\n' "stalled writes sent again" "none (nothing was in flight on the rail)"
else
  printf '%-34s %12s\n' "link down -> stalled writes resent" "$(since_down "$first") ms (rail_stall_ms $stall_ms)"
fi
bytes_round=$((per_peer * 2))
python3 -c "
b = $bytes_round / 1e6
print(f'{\"stream, 4 rails, before link down\":<34} {b * $before / $down_s:>12.1f} MB/s/rank')
print(f'{\"stream, while rail 2 is down\":<34} {b * $during / $down_s:>12.1f} MB/s/rank (rounds wait for the stalled originals: tcp delivers them after link up)')"
exit $status
