#!/usr/bin/env bash
# The Python GPU tests on the GPU machine: python/tests/test_low_latency_gpu.py
# and test_normal_gpu.py.
#   tools/device/python_gpu.sh BIN_DIR [WHEEL]
# BIN_DIR holds epxd, epxctl and libepx_c.so. With WHEEL (built here by
# tools/build-wheel.sh), the tests import the packages installed from it
# (pip install --no-index, or unpacked where pip is missing) with the
# library bundled in it, as a user's machine would; without, the packages
# in python/ and BIN_DIR's library. Through pytest when the machine's python
# has it; otherwise their rank programs directly, each of which must print
# "rank N ok" (the same cases, without pytest).
set -uo pipefail
bin=$1 wheel=${2:-}
dir=$(mktemp -d)
export EPX_EPXD=$bin/epxd EPX_EPXCTL=$bin/epxctl PYTHONDONTWRITEBYTECODE=1
if [[ -n $wheel ]]; then
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target "$dir/site" "$wheel" || exit 1
  else
    python3 -m zipfile -e "$wheel" "$dir/site" || exit 1
  fi
  export PYTHONPATH=$dir/site EPX_TEST_INSTALLED=1
  unset EPX_LIBRARY
  python3 -c "import epx, deep_ep; print('installed from the wheel:', epx.__file__)" || exit 1
else
  export EPX_LIBRARY=$bin/libepx_c.so
fi
if python3 -c "import pytest" 2>/dev/null; then
  exec python3 -m pytest python/tests/test_low_latency_gpu.py python/tests/test_normal_gpu.py -q -rs \
    -p no:cacheprovider
fi
echo "pytest is not installed here: running the rank programs directly"
daemons=()
for name in a b; do
  "$bin/epxd" --node-name "$name" --control-socket "$dir/$name.sock" --peer-listen 127.0.0.1:0 --provider shm \
    --log-level info >"$dir/epxd-$name.log" 2>&1 &
  daemons+=($!)
done
trap 'kill "${daemons[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for name in a b; do for _ in $(seq 100); do [[ -S $dir/$name.sock ]] && break; sleep 0.1; done; done
failed=0
run() {  # name socket-of-rank-1 script args...: two ranks, rank 0 on daemon a
  local name=$1 second=$2 script=$3
  shift 3
  local pids=() r
  for r in 0 1; do
    local socket=$dir/a.sock
    [[ $r -eq 1 ]] && socket=$second
    EPX_SOCKET=$socket python3 "python/tests/$script" "$dir/$name.rdv" "$r" 2 "$@" >"$dir/$name.$r.log" 2>&1 &
    pids+=($!)
  done
  for r in 0 1; do
    if wait "${pids[$r]}" && grep -q "rank $r ok" "$dir/$name.$r.log"; then
      echo "PASSED $name rank $r"
    else
      echo "FAILED $name rank $r:"
      tail -n 30 "$dir/$name.$r.log"
      failed=1
    fi
  done
}
run low_latency_bf16 "$dir/a.sock" gpu_rank_main.py 0 0 0
run low_latency_bf16_hook "$dir/a.sock" gpu_rank_main.py 1 0 0
run low_latency_fp8_graph "$dir/a.sock" gpu_rank_main.py 0 1 1
run low_latency_fp8_hook "$dir/a.sock" gpu_rank_main.py 1 1 0
run low_latency_two_daemons "$dir/b.sock" gpu_rank_main.py 1 1 1
run normal "$dir/a.sock" normal_gpu_rank_main.py
# Normal mode as two nodes of two ranks: ranks 0, 1 on daemon a, 2, 3 on b.
pids=()
for r in 0 1 2 3; do
  socket=$dir/a.sock
  [[ $r -ge 2 ]] && socket=$dir/b.sock
  EPX_SOCKET=$socket python3 python/tests/normal_gpu_rank_main.py "$dir/normal_nodes.rdv" "$r" 4 2 \
    >"$dir/normal_nodes.$r.log" 2>&1 &
  pids+=($!)
done
for r in 0 1 2 3; do
  if wait "${pids[$r]}" && grep -q "rank $r ok" "$dir/normal_nodes.$r.log"; then
    echo "PASSED normal_nodes rank $r"
  else
    echo "FAILED normal_nodes rank $r:"
    tail -n 30 "$dir/normal_nodes.$r.log"
    failed=1
  fi
done
exit $failed
