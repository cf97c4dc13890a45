#!/usr/bin/env bash
# Runs every GPU test and benchmark on the lent GPU machine in one call.
#
# Here (build machine):
#   tools/device/pack.sh              # opt build + .device-pack/ (binaries and their Debian libraries)
# Then one device call, carrying .device-pack:
#   tools/device/run.sh [STEP...]     # default: every step
# Steps: fp8_cast_gpu_test low_latency_gpu_test ll_job_ep2 ll_job_ep16 ll_job_kill gpu_path_test gpu_device_window_test
#        normal_job_ep2 normal_job_ep8 normal_job_ep16 normal_job_kill
#        normal_nodes_ep2 normal_nodes_ep4 normal_nodes_ep8 normal_nodes_ep16 normal_nodes4_ep16 normal_nodes_kill python_gpu normal_bench normal_bench_sms32
#        normal_bench_sms64 normal_bench_nodes2 normal_bench_nodes2_rails4 normal_bench_nodes4
#        normal_bench_nodes4_rails4 normal_bench_nodes2_unbounded normal_bench_nodes4_unbounded deep_ep_bench deepep_same_gpu
#        ll_bench_nvlink ll_bench_daemons epx_bench_shm epx_bench_shm_window64 epx_bench_tcp noisy_bench gpu_bench rails_bench
# Full logs go to $OUT (one file per step); a short table is printed, then
# "benchmarks: N ran, N failed" and, last, the tests' "N passed, N failed,
# N skipped" (a test that printed "EPX_TEST_SKIPPED: <why>" and exited 0 is
# skipped, as in tools/test.sh; each "EPX_TEST_CASE_SKIPPED: <why>" line is
# one skipped test case of a binary that otherwise passed). Exit status non-zero iff a test or a
# benchmark failed.
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
mkdir -p /tmp/rf/epx/daemon /tmp/rf/epx/tools/device
cp "$pack/bin/epxd" /tmp/rf/epx/daemon/
cp "$pack/bin/ll_rank" "$pack/bin/normal_rank" /tmp/rf/epx/tools/device/
cp "$pack/bin/epxctl" /tmp/rf/epx/tools/
export TEST_SRCDIR=/tmp/rf TEST_WORKSPACE=epx
bin=$pack/bin
# The packed tools (iproute2's ip for rails_bench) when the image lacks them.
export PATH=$PATH:$(realpath "$bin")

summary=() results=()
passed=0 failed=0 skipped=0 benches=0 bench_failed=0
wanted=" ${*:-fp8_cast_gpu_test low_latency_gpu_test ll_job_ep2 ll_job_ep16 ll_job_kill gpu_path_test gpu_device_window_test normal_job_ep2 normal_job_ep8 normal_job_ep16 normal_job_kill normal_nodes_ep2 normal_nodes_ep4 normal_nodes_ep8 normal_nodes_ep16 normal_nodes4_ep16 normal_nodes_kill python_gpu normal_bench normal_bench_sms32 normal_bench_sms64 normal_bench_nodes2 normal_bench_nodes2_rails4 normal_bench_nodes4 normal_bench_nodes4_rails4 normal_bench_nodes2_unbounded normal_bench_nodes4_unbounded deep_ep_bench deepep_same_gpu ll_bench_nvlink ll_bench_daemons epx_bench_shm epx_bench_shm_window64 epx_bench_tcp noisy_bench gpu_bench rails_bench} "
step() {  # name timeout_s command...: runs it (when wanted), output in $out/name.log; sets step_rc
  local name=$1 limit=$2; shift 2
  [[ $wanted == *" $name "* ]] || return 1
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  step_rc=$?
  summary+=("$(printf '%-22s rc=%-3s %4ss' "$name" "$step_rc" $((SECONDS - start)))")
  echo "== $name: rc=$step_rc ($((SECONDS - start)) s)"
}
gpu_test() {  # name timeout_s command...: passed, failed or skipped
  step "$@" || return 0
  local name=$1 reason
  reason=$(grep -m1 "^EPX_TEST_SKIPPED: " "$out/$name.log")
  if [[ $step_rc -ne 0 ]]; then
    failed=$((failed + 1))
    results+=("$name: FAILED (rc=$step_rc)")
  elif grep -qE "test cases: +0 \|" "$out/$name.log"; then
    # A filter that matched nothing ran nothing: that is not a pass.
    failed=$((failed + 1))
    results+=("$name: FAILED (no test case matched its filter)")
  elif [[ -n $reason ]]; then
    skipped=$((skipped + 1))
    results+=("$name: skipped: ${reason#EPX_TEST_SKIPPED: }")
  else
    # Cases that returned early (SKIP_TEST_CASE) are skipped, not passed:
    # doctest counts them as passed, so they are taken out and named.
    local case_skips
    case_skips=$(grep -c "^EPX_TEST_CASE_SKIPPED: " "$out/$name.log")
    passed=$((passed + 1))
    skipped=$((skipped + case_skips))
    results+=("$name: passed ($(grep -E "test cases" "$out/$name.log" | tail -n 1); of those $case_skips skipped, counted as skipped)")
    while read -r why; do results+=("  skipped case in $name: ${why#EPX_TEST_CASE_SKIPPED: }"); done \
      < <(grep "^EPX_TEST_CASE_SKIPPED: " "$out/$name.log")
  fi
}
bench() {  # name timeout_s command...: ran, or failed
  step "$@" || return 0
  benches=$((benches + 1))
  [[ $step_rc -eq 0 ]] || bench_failed=$((bench_failed + 1))
}

nvidia-smi -L
nproc
gpu_test fp8_cast_gpu_test 60 "$bin/fp8_cast_gpu_test"
gpu_test low_latency_gpu_test 200 "$bin/low_latency_gpu_test"
gpu_test ll_job_ep2 300 "$bin/low_latency_job_test" --test-case="EP2*"
gpu_test ll_job_ep16 300 "$bin/low_latency_job_test" --test-case="EP16*"
gpu_test ll_job_kill 120 "$bin/low_latency_job_test" --test-case="a rank killed*"
gpu_test gpu_path_test 200 "$bin/gpu_path_test"
gpu_test gpu_device_window_test 120 "$bin/gpu_device_window_test"
gpu_test normal_job_ep2 300 "$bin/normal_job_test" --test-case="EP2*"
gpu_test normal_job_ep8 300 "$bin/normal_job_test" --test-case="EP8*"
gpu_test normal_job_ep16 300 "$bin/normal_job_test" --test-case="EP16*"
gpu_test normal_job_kill 120 "$bin/normal_job_test" --test-case="a rank killed*"
gpu_test normal_nodes_ep2 300 "$bin/normal_job_test" --test-case="two nodes EP2*"
gpu_test normal_nodes_ep4 300 "$bin/normal_job_test" --test-case="two nodes EP4*"
gpu_test normal_nodes_ep8 300 "$bin/normal_job_test" --test-case="two nodes EP8*"
gpu_test normal_nodes_ep16 400 "$bin/normal_job_test" --test-case="two nodes EP16*"
gpu_test normal_nodes4_ep16 400 "$bin/normal_job_test" --test-case="four nodes EP16*"
gpu_test normal_nodes_kill 120 "$bin/normal_job_test" --test-case="two nodes kill*"
# deep_ep in Python (low-latency and normal mode), two ranks on the GPUs.
# From the wheel in the pack when there is one (tools/device/pack.sh builds it).
gpu_test python_gpu 480 tools/device/python_gpu.sh "$bin" "$(ls "$pack"/wheel/epx-*.whl 2>/dev/null | head -n 1)"
# Normal dispatch/combine, DeepEP's intranode test shape (4096 tokens, hidden 7168, top-8, 256 experts).
bench normal_bench 200 tools/device/normal_bench.sh "$bin" 2
bench normal_bench_sms32 200 tools/device/normal_bench.sh "$bin" 2 --num-sms 32
bench normal_bench_sms64 200 tools/device/normal_bench.sh "$bin" 2 --num-sms 64
bench normal_bench_nodes2 200 env NODES=2 tools/device/normal_bench.sh "$bin" 2
# The same with four shm rails per daemon: large writes striped over four copying proxy threads.
bench normal_bench_nodes2_rails4 200 env NODES=2 RAILS_PER_DOMAIN=4 tools/device/normal_bench.sh "$bin" 2
bench normal_bench_nodes4 200 env NODES=2 tools/device/normal_bench.sh "$bin" 4
bench normal_bench_nodes4_rails4 200 env NODES=2 RAILS_PER_DOMAIN=4 tools/device/normal_bench.sh "$bin" 4
# The hop without the shm bound on a job alone on a rail (epxd's default
# single_job_bound auto bounds it on shm): the before/after of session 13.
bench normal_bench_nodes2_unbounded 200 env NODES=2 EPXD_ARGS="--single-job-bound off" tools/device/normal_bench.sh "$bin" 2
bench normal_bench_nodes4_unbounded 200 env NODES=2 EPXD_ARGS="--single-job-bound off" tools/device/normal_bench.sh "$bin" 4
# The same shapes through `import deep_ep` (the Python layer's cost, beside the C++ figures above).
bench deep_ep_bench 200 tools/device/deep_ep_bench.sh "$bin"
# DeepEP itself beside EPX through the same deep_ep script (builds DeepEP first, about 90 s).
bench deepep_same_gpu 600 tools/device/deepep_same_gpu.sh "$bin" "$pack/deepep/deepep-567632d.tar.gz"
# LL dispatch/combine, DeepEP's LL test shape (128 tokens, hidden 7168, top-8, 288 experts).
bench ll_bench_nvlink 200 "$bin/ll_bench" --epxd "$bin/epxd" --rank-binary "$bin/ll_rank" --layout nvlink \
  --gpus "$(nvidia-smi -L | wc -l)"
bench ll_bench_daemons 200 "$bin/ll_bench" --epxd "$bin/epxd" --rank-binary "$bin/ll_rank" --layout daemons \
  --gpus "$(nvidia-smi -L | wc -l)" --cores 2,4
bench epx_bench_shm 100 "$bin/epx_bench" --provider shm --epxd "$bin/epxd" --cores 2,4,6,8
# The same walking a 64 MiB window, as gpu_bench's streaming does.
bench epx_bench_shm_window64 100 "$bin/epx_bench" --provider shm --epxd "$bin/epxd" --cores 2,4,6,8 --window-mib 64
bench epx_bench_tcp 100 "$bin/epx_bench" --provider tcp --epxd "$bin/epxd" --cores 2,4,6,8
# No GPU needed: two jobs through the same two daemons (docs/PERFORMANCE.md, noisy neighbour).
bench noisy_bench 200 "$bin/epx_noisy_bench" --provider tcp --epxd "$bin/epxd" --busy-poll --cores 2,4,6,8,10
bench gpu_bench 120 "$bin/gpu_bench" --epxd "$bin/epxd" --cores "${EPX_GPU_BENCH_CORES:-2,4,6}"
# No GPU needed: striped bandwidth over 1, 2 and 4 tcp rails (veth pairs in
# network namespaces) and the failover time (docs/PERFORMANCE.md, "Rails").
bench rails_bench 300 tools/bench/rails_bench.sh --bin "$bin" --cores "${EPX_RAILS_BENCH_CORES:-2-9}"

echo
echo "== results"
printf '%s\n' "${results[@]}"
for f in normal_bench normal_bench_sms32 normal_bench_sms64 normal_bench_nodes2 normal_bench_nodes2_rails4 normal_bench_nodes4 normal_bench_nodes4_rails4 normal_bench_nodes2_unbounded normal_bench_nodes4_unbounded deep_ep_bench deepep_same_gpu ll_bench_nvlink ll_bench_daemons epx_bench_shm epx_bench_shm_window64 epx_bench_tcp noisy_bench gpu_bench rails_bench; do [[ -f $out/$f.log ]] || continue; echo "-- $f"; grep -vE "^\[" "$out/$f.log" | tail -n 20; done
echo
printf '%s\n' "${summary[@]}"
echo "benchmarks: $benches ran, $bench_failed failed"
echo "$passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 && $bench_failed -eq 0 ]]
